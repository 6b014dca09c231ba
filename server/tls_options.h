// TlsOptions: the certificate moe-server presents, on gRPC and HTTP alike, and the CA whose
// client certificates it then requires (mutual TLS): PEM text, read from the files that
// --tls_cert, --tls_key and --tls_client_ca name. Off unless a certificate is given.
#pragma once

#include <string>

namespace moe::server {

struct TlsOptions {
  std::string certificate_chain;  // PEM, the server's certificate first; empty: TLS is off
  std::string private_key;        // PEM, the certificate's key
  std::string client_ca;          // PEM; non-empty: clients must present a certificate it signed

  bool enabled() const { return !certificate_chain.empty(); }
};

}  // namespace moe::server
