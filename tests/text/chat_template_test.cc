// ChatTemplate vs transformers' apply_chat_template: byte-identical output for the Qwen3,
// Mixtral and OLMoE templates (tests/data/chat_templates/, made by
// tools/tokenizer_goldens/make_chat_goldens.py), plus the interpreter's error reporting.
#include "runtime/text/chat_template.h"

#include <map>
#include <string>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"
#include "runtime/text/tokenizer_config.h"

namespace moe::text {
namespace {

using ordered_json = nlohmann::ordered_json;

std::string DataDir() { return std::string(MOE_TEXT_TEST_DATA_DIR); }

std::string ReadOrDie(const std::string& path) {
  auto text = ReadTextFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.value_or("");
}

TEST(ChatTemplateGoldenTest, MatchesTransformersByteForByte) {
  const ordered_json goldens =
      ordered_json::parse(ReadOrDie(DataDir() + "/chat_templates/goldens.json"));
  std::map<std::string, int> rendered, refused;
  for (const ordered_json& c : goldens["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const std::string source = ReadOrDie(DataDir() + "/chat_templates/" + name + ".jinja");
    auto chat = ChatTemplate::Create(
        source, {{"bos_token", c["bos_token"]}, {"eos_token", c["eos_token"]}});
    ASSERT_TRUE(chat.ok()) << name << ": " << chat.status();
    ChatTemplateInputs inputs{.messages = c["messages"],
                              .add_generation_prompt = c["add_generation_prompt"].get<bool>()};
    inputs.extra = c["extra"];
    if (inputs.extra.contains("tools")) inputs.tools = inputs.extra["tools"];
    const std::string what = name + "/" + c["name"].get<std::string>() + " " + c["extra"].dump() +
                             (inputs.add_generation_prompt ? " +gen" : "");
    auto out = chat->Render(inputs);
    if (c["error"].is_null()) {
      ASSERT_TRUE(out.ok()) << what << ": " << out.status();
      EXPECT_EQ(absl::CEscape(*out), absl::CEscape(c["output"].get<std::string>())) << what;
      ++rendered[name];
    } else {
      ASSERT_FALSE(out.ok()) << what << " rendered " << absl::CEscape(*out);
      EXPECT_EQ(out.status().message(), "chat template raised: " + c["error"].get<std::string>());
      ++refused[name];
    }
  }
  EXPECT_GE(rendered["qwen3"], 60);
  EXPECT_GE(rendered["mixtral"], 10);
  EXPECT_GE(rendered["olmoe"], 10);
  EXPECT_GE(refused["mixtral"], 2);
}

TEST(ChatTemplateTest, LoadsFromTokenizerConfig) {
  auto config = TokenizerConfig::FromFile(DataDir() + "/tokenizers/mistral/tokenizer_config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto chat = ChatTemplate::FromConfig(*config);
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto out = chat->Render({.messages = {{{"role", "user"}, {"content", "hi"}}}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s> [INST] hi [/INST]");
}

std::string RenderOrError(const std::string& source, ordered_json extra = ordered_json::object()) {
  auto chat = ChatTemplate::Create(source, {{"bos_token", "<s>"}});
  if (!chat.ok()) return "load error: " + std::string(chat.status().message());
  auto out = chat->Render({.extra = std::move(extra)});
  return out.ok() ? *out : "render error: " + std::string(out.status().message());
}

TEST(ChatTemplateTest, WhitespaceControlFollowsTransformersSettings) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the indent before it.
  EXPECT_EQ(RenderOrError("{% if true %}\n    x\n    {% endif %}\ny"), "    x\ny");
  EXPECT_EQ(RenderOrError("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(RenderOrError("a {{ 1 }}\n{{- 2 }} {# note #}\nz\n"), "a 12 z");
}

TEST(ChatTemplateTest, ExpressionsFollowPython) {
  EXPECT_EQ(RenderOrError("{{ 7 // 2 }} {{ -7 % 3 }} {{ 1 / 2 }} {{ 2 ** 3 }} {{ 'ab' * 2 }}"),
            "3 2 0.5 8 abab");
  EXPECT_EQ(RenderOrError("{{ [1, 'a', none, true] }} {{ {'k': 1.0} }}"),
            "[1, 'a', None, True] {'k': 1.0}");
  EXPECT_EQ(RenderOrError("{{ 'a,b,,c'.split(',') | join('|') }} {{ '  x '.strip() }}"),
            "a|b||c x");
  EXPECT_EQ(RenderOrError("{{ 'héllo'[1] }}{{ 'héllo'[::-1] }}{{ [1,2,3][1:] }}"), "éolléh[2, 3]");
  EXPECT_EQ(RenderOrError("{{ x | default('d') }} {{ x is defined }} {{ 3 is odd }}"),
            "d False True");
  EXPECT_EQ(
      RenderOrError("{% for k, v in {'a': 1, 'b': 2}.items() if v > 1 %}{{ k }}{{ loop.index }}"
                    "{% endfor %}"),
      "b1");
  EXPECT_EQ(RenderOrError("{% set ns = namespace(n=0) %}{% for i in range(4) %}"
                          "{% if i == 2 %}{% break %}{% endif %}{% set ns.n = ns.n + i %}"
                          "{% endfor %}{{ ns.n }}"),
            "1");
  EXPECT_EQ(RenderOrError("{{ {'b': [1, 'é']} | tojson }}"), "{\"b\": [1, \"é\"]}");
}

TEST(ChatTemplateTest, UnsupportedConstructsFailClearly) {
  EXPECT_EQ(RenderOrError("{% macro m() %}x{% endmacro %}"),
            "load error: chat template line 1: '{% macro %}' is not supported");
  EXPECT_EQ(RenderOrError("{{ xs | selectattr('a') }}"),
            "render error: chat template: filter 'selectattr' is not supported");
  EXPECT_EQ(RenderOrError("{% if x %}"),
            "load error: chat template ended inside a block (expected {% endif %})");
  EXPECT_EQ(RenderOrError("{{ 'a' + x }}"),
            "render error: chat template: unsupported operand types for +: string and undefined");
  EXPECT_EQ(RenderOrError("{{ raise_exception('no ' ~ bos_token) }}"),
            "render error: chat template raised: no <s>");
}

}  // namespace
}  // namespace moe::text
