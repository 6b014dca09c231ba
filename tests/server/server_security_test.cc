// moe-server's front doors: an API key guards every moe.v1.Generation call (UNAUTHENTICATED
// without it) and /v1 (401), with health left open; with TLS on, TLS clients of gRPC and
// HTTP are served and plaintext ones refused; with a client CA, only clients presenting a
// certificate it signed get in. The certificates come from a throwaway CA made here with the
// openssl command.
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/server/server_process.h"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kKey[] = "sk-test-key";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A CA, and a server certificate (for localhost and 127.0.0.1) and a client certificate it
// signed, under `dir`: ca.pem, server.pem + server.key, client.pem + client.key. Also a
// second CA's client certificate, stranger.pem + stranger.key.
void MakeCertificates(const std::string& dir) {
  const std::string script = absl::StrCat(
      "set -e; cd '", dir, "'\n",
      "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\" 2>/dev/null; }\n",
      "ca() { key \"$1.key\"; openssl req -x509 -new -key \"$1.key\" -out \"$1.pem\" -days 2 -subj \"/CN=$1\"; }\n",
      "sign() {  # name, CA, extensions\n",
      "  key \"$1.key\"; openssl req -new -key \"$1.key\" -out \"$1.csr\" -subj \"/CN=$1\"\n",
      "  printf '%s\\n' \"$3\" > \"$1.ext\"\n",
      "  openssl x509 -req -in \"$1.csr\" -CA \"$2.pem\" -CAkey \"$2.key\" -CAcreateserial -out \"$1.pem\" -days 2 ",
      "-extfile \"$1.ext\" 2>/dev/null\n",
      "}\n",
      "ca ca; ca other_ca\n",
      "sign server ca 'subjectAltName=DNS:localhost,IP:127.0.0.1'\n",
      "sign client ca 'extendedKeyUsage=clientAuth'\n",
      "sign stranger other_ca 'extendedKeyUsage=clientAuth'\n");
  ASSERT_EQ(std::system(absl::StrCat("bash -c \"$(cat <<'EOF'\n", script, "EOF\n)\" >&2").c_str()), 0)
      << "openssl could not make the test certificates";
}

class ServerSecurityTest : public ServerModelTest {
 protected:
  std::unique_ptr<v1::Generation::Stub> Stub(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return v1::Generation::NewStub(grpc::CreateCustomChannel(server_->address(), credentials, args));
  }

  // GetServerInfo's status, with `key` (if any) as the bearer token.
  static grpc::Status ServerInfo(v1::Generation::Stub& stub, const std::string& authorization = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    v1::ServerInfo info;
    return stub.GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  }
};

TEST_F(ServerSecurityTest, AnApiKeyGuardsEveryGenerationCallAndV1ButNotHealth) {
  StartServer({"--api_key", kKey});
  auto stub = Stub(grpc::InsecureChannelCredentials());
  for (const std::string& authorization : {std::string(), std::string("Bearer wrong"), std::string(kKey)}) {
    const grpc::Status status = ServerInfo(*stub, authorization);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "authorization: " << authorization;
    EXPECT_THAT(status.error_message(), HasSubstr("authorization: Bearer"));
  }
  EXPECT_TRUE(ServerInfo(*stub, absl::StrCat("Bearer ", kKey)).ok());
  EXPECT_TRUE(ServerInfo(*stub, absl::StrCat("bearer ", kKey)).ok()) << "the scheme is case-insensitive";

  {  // a stream, and the other unary calls
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.mutable_token_ids()->add_ids(1);
    request.mutable_stopping()->set_max_tokens(2);
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    v1::Load load;
    EXPECT_EQ(stub->GetLoad(&context, v1::GetLoadRequest(), &load).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
    v1::GenerateRequest request;
    request.mutable_token_ids()->add_ids(1);
    request.mutable_stopping()->set_max_tokens(2);
    request.mutable_stopping()->set_ignore_eos(true);
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
  }
  {  // health stays open, for load balancers
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    EXPECT_TRUE(health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok());
  }

  httplib::Client http("127.0.0.1", server_->http_port());
  auto refused = http.Get("/v1/models");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  auto models = http.Get("/v1/models", {{"Authorization", absl::StrCat("Bearer ", kKey)}});
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(ServerSecurityTest, EveryInterfaceWithoutAKeyLogsAWarningAndLoopbackDoesNot) {
  StartServer({"--host", "0.0.0.0"});
  EXPECT_THAT(server_->Log(), HasSubstr("listening on 0.0.0.0 without an API key"));
  server_.reset();
  StartServer({"--host", "0.0.0.0", "--api_key", kKey});
  EXPECT_THAT(server_->Log(), ::testing::Not(HasSubstr("without an API key")));
  server_.reset();
  StartServer({});
  EXPECT_THAT(server_->Log(), ::testing::Not(HasSubstr("without an API key")));
}

TEST_F(ServerSecurityTest, WithTlsOnTlsClientsAreServedAndPlaintextOnesRefused) {
  const std::string certs = ScratchDir("certs");
  ASSERT_NO_FATAL_FAILURE(MakeCertificates(certs));
  StartServer({"--tls_cert", certs + "/server.pem", "--tls_key", certs + "/server.key"});

  auto tls = Stub(grpc::SslCredentials({.pem_root_certs = ReadAll(certs + "/ca.pem")}));
  const grpc::Status served = ServerInfo(*tls);
  EXPECT_TRUE(served.ok()) << served.error_message();
  const grpc::Status plaintext = ServerInfo(*Stub(grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();

  httplib::SSLClient https("127.0.0.1", server_->http_port());
  https.set_ca_cert_path((certs + "/ca.pem").c_str());
  https.enable_server_certificate_verification(true);
  auto models = https.Get("/v1/models");
  ASSERT_TRUE(models) << "HTTPS: " << httplib::to_string(models.error());
  EXPECT_EQ(models->status, 200);
  EXPECT_THAT(models->body, HasSubstr("\"object\":\"list\""));

  httplib::Client http("127.0.0.1", server_->http_port());
  http.set_read_timeout(5);
  EXPECT_FALSE(http.Get("/health")) << "a plaintext HTTP request was answered on the TLS port";
  // The server is still well after the plaintext attempts.
  EXPECT_TRUE(ServerInfo(*tls).ok());
}

TEST_F(ServerSecurityTest, WithAClientCaOnlyClientsItSignedGetIn) {
  const std::string certs = ScratchDir("certs");
  ASSERT_NO_FATAL_FAILURE(MakeCertificates(certs));
  StartServer({"--tls_cert", certs + "/server.pem", "--tls_key", certs + "/server.key", "--tls_client_ca",
               certs + "/ca.pem"});
  const std::string ca = ReadAll(certs + "/ca.pem");
  auto as = [&](const std::string& name) {
    return Stub(grpc::SslCredentials({.pem_root_certs = ca,
                                      .pem_private_key = ReadAll(certs + "/" + name + ".key"),
                                      .pem_cert_chain = ReadAll(certs + "/" + name + ".pem")}));
  };
  const grpc::Status client = ServerInfo(*as("client"));
  EXPECT_TRUE(client.ok()) << client.error_message();
  EXPECT_FALSE(ServerInfo(*as("stranger")).ok()) << "another CA's client was let in";
  EXPECT_FALSE(ServerInfo(*Stub(grpc::SslCredentials({.pem_root_certs = ca}))).ok())
      << "a client without a certificate was let in";

  auto https = [&](const std::string& name) {
    auto c = name.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", server_->http_port())
                          : std::make_unique<httplib::SSLClient>("127.0.0.1", server_->http_port(),
                                                                 certs + "/" + name + ".pem",
                                                                 certs + "/" + name + ".key");
    c->set_ca_cert_path((certs + "/ca.pem").c_str());
    c->enable_server_certificate_verification(true);
    c->set_read_timeout(5);
    return c;
  };
  auto health = https("client")->Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_FALSE(https("stranger")->Get("/health"));
  EXPECT_FALSE(https("")->Get("/health"));
}

TEST_F(ServerSecurityTest, BadTlsFlagsEndTheServerWithAnErrorNamingThem) {
  const std::string certs = ScratchDir("certs");
  ASSERT_NO_FATAL_FAILURE(MakeCertificates(certs));
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--model", dir_, "--port", "0", "--http_port", "0"});
    return ServerProcess::RunToExit(args);
  };
  auto [code, out] = run({"--tls_cert", certs + "/server.pem"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("--tls_cert and --tls_key go together"));
  std::tie(code, out) = run({"--tls_cert", certs + "/missing.pem", "--tls_key", certs + "/server.key"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("missing.pem"));
  std::tie(code, out) = run({"--tls_cert", certs + "/server.pem", "--tls_key", certs + "/server.ext"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("--tls_key"));
  // A key that is not the certificate's.
  std::tie(code, out) = run({"--tls_cert", certs + "/server.pem", "--tls_key", certs + "/client.key"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("--tls_key, --tls_client_ca: TLS: bad private key"));
}

}  // namespace
}  // namespace moe::testing
