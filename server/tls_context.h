// The server's TLS context, made from TlsOptions: TLS 1.2 and 1.3 with the certificate, and,
// with a client CA, a certificate required of every client that the CA signed. The HTTP
// server makes one; CheckTls lets main refuse bad flags before anything starts.
//
//   ASSIGN_OR_RETURN(boost::asio::ssl::context context, MakeTlsContext(options.tls));
#pragma once

#include <boost/asio/ssl/context.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/tls_options.h"

namespace moe::server {

// INVALID_ARGUMENT naming the part that does not parse, or a key that is not the certificate's.
absl::StatusOr<boost::asio::ssl::context> MakeTlsContext(const TlsOptions& tls);
absl::Status CheckTls(const TlsOptions& tls);

}  // namespace moe::server
