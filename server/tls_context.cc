// The server's TLS context (see tls_context.h).
#include "server/tls_context.h"

#include "absl/strings/str_cat.h"

namespace moe::server {

namespace ssl = boost::asio::ssl;

absl::StatusOr<ssl::context> MakeTlsContext(const TlsOptions& tls) {
  ssl::context context(ssl::context::tls_server);
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                      ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  auto failed = [&ec](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("TLS: bad ", what, ": ", ec.message()));
  };
  if (context.use_certificate_chain(boost::asio::buffer(tls.certificate_chain), ec)) return failed("certificate chain");
  if (context.use_private_key(boost::asio::buffer(tls.private_key), ssl::context::pem, ec)) return failed("private key");
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    return absl::InvalidArgumentError("TLS: the private key is not the certificate's");
  }
  if (!tls.client_ca.empty()) {
    if (context.add_certificate_authority(boost::asio::buffer(tls.client_ca), ec)) return failed("client CA");
    context.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

absl::Status CheckTls(const TlsOptions& tls) { return MakeTlsContext(tls).status(); }

}  // namespace moe::server
