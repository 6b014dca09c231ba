"""The hard strings every tokenizer golden is made from, and the invalid UTF-8 byte strings.

Usage:
  from corpus import hard_strings, invalid_utf8
  for text in hard_strings(): ...
"""
import random

# One or more code points from every plane that has assigned characters (and a few that don't).
PLANES = [
    "\u0041\u00e9\u0101\u0391\u0416\u05d0\u0627\u0905"  # plane 0 (BMP)
    "\u0e01\u10d0\u1100\u1e9e\u2603\u30a2\u4e00\uac00",
    "\U00010000\U0001d11e\U0001d400\U0001f600\U0001f9d1\U0001fa70\U00010348",  # plane 1 (SMP)
    "\U00020000\U0002a6d6\U0002b740\U0002f800",  # plane 2 (SIP: CJK extensions B..)
    "\U00030000\U0003134a",  # plane 3 (TIP: CJK extension G)
    "\U000e0001\U000e0041\U000e007f\U000e0100",  # plane 14: tags, variation selectors
    "\U000f0000\U000ffffd\U00100000\U0010fffd",  # planes 15-16: private use
    "\ud7ff\ue000\uf8ff\ufb01\ufdfa\ufeff\ufffc\ufffd",  # edges of the BMP around surrogates
    "\u0378\u0380\u08b5\U0001ffff\U0002fffe\U0010ffff",  # unassigned and noncharacters
]

CJK = [
    "我爱自然语言处理。今天天气很好！",
    "日本語のテキストとカタカナ、ひらがな、漢字を混ぜた文章です。",
    "한국어 문장: 안녕하세요, 반갑습니다.",
    "中文English混合text123数字",
    "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　ＡＢＣ１２３",
    "ﾊﾝｶｸｶﾀｶﾅ",
]

EMOJI = [
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag, 🇯🇵🇺🇸 flags",
    "👍🏽👍🏿 skin tones",
    "🧑‍💻 coder ❤️‍🔥 heart on fire",
    "😀😃😄😁😆😅😂🤣🥲☺️😊",
    "keycap 1️⃣ #️⃣ *️⃣",
]

COMBINING = [
    "e\u0301 vs \u00e9",  # decomposed vs precomposed (NFC changes the first)
    "A\u030a\u0327 \u212b \u2126",  # ring+cedilla, Angstrom sign, Ohm sign
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349",  # zalgo
    "\u1100\u1161\u11a8 jamo vs \uac01",
    "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947",  # Devanagari conjuncts
    "\u0301 leading combining mark",
    "ﬁ ﬂ ﬃ ligatures",
]

RTL = [
    "مرحبا بالعالم",
    "שָׁלוֹם עוֹלָם",
    "English then عربي then English",
    "\u202eoverride\u202c and \u200fRLM\u200e LRM",
    "١٢٣٤٥٦٧٨٩٠ Arabic-Indic digits",
]

CONTROL = [
    "\x00nul\x01\x02\x03\x07bell\x08\x1b[31mred\x1b[0m\x7f",
    "tab\there\vvt\fff\rcr\r\nwindows",
    "nel\x85nel ls\u2028ps\u2029 nbsp\u00a0 ideographic\u3000space",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060wj",
    "\t\t\t\n\n\n",
]

SPACES = [
    "",
    " ",
    "  ",
    " " * 100,
    "a" + " " * 37 + "b",
    "trailing   ",
    "   leading",
    "\n",
    "\n" * 50,
    " \n \n  \n   \n",
    "line one\n\nline two\n\n\nline three",
    "\r\n" * 20,
    "    indented code\n        more\n\tand tab\n",
    "0" * 64,
    "1234567890" * 10,
    "3.14159265358979 2,147,483,647 -42 1e10 0x7fffffff",
    "12 345 6789 0123456 1",
]

PROSE = [
    "Hello world",
    "Hello, world! How's it going? I'm fine; you'll see, we'd've known.",
    "DON'T SHOUT. She'S HERE. We'Re 'RE 'LL 'Ve",
    "ſtraße ΣΊΣΥΦΟΣ ǅemal ﬀ",
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "https://example.com/path?q=1&r=two#frag <a href=\"x\">link</a>",
    "email@example.org, @handle #hashtag $100 50% ~tilde `code`",
    "...!!!???---___===+++***///\\\\\\|||",
    "'s 's 'S 't 're 've 'm 'll 'd",
    "Ünïcödé façade coöperation naïve",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "สวัสดีชาวโลก",
    "ሰላም ለዓለም",
]

SPECIALS_IN_TEXT = [
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<s>[INST] hi [/INST]</s>",
    " <s> spaced </s> ",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning\n</think>\n\nanswer",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<unk><unk> x <unk>",
    "<|endoftext|><|endoftext|>",
    "<|im_start|<|im_end|>|>",
    "<s",
]


def random_strings(count=60, seed=7):
    """Random mixtures of the pieces above, to reach combinations no one wrote by hand."""
    rng = random.Random(seed)
    pool = "".join(PLANES + CJK + EMOJI + COMBINING + RTL + CONTROL + PROSE)
    pieces = PLANES + CJK + EMOJI + COMBINING + RTL + CONTROL + SPACES + PROSE + SPECIALS_IN_TEXT
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
        else:
            out.append("".join(rng.choice(pieces) for _ in range(rng.randint(2, 5))))
    return out


def hard_strings():
    groups = [PLANES, CJK, EMOJI, COMBINING, RTL, CONTROL, SPACES, PROSE, SPECIALS_IN_TEXT]
    return [s for g in groups for s in g] + random_strings()


# Byte strings that are not UTF-8: the tokenizer must reject them with an error, never crash.
INVALID_UTF8 = [
    b"\xff",
    b"abc\x80def",
    b"\xc3",  # truncated 2-byte sequence
    b"\xe4\xb8",  # truncated 3-byte sequence
    b"\xf0\x9f\x98",  # truncated 4-byte sequence
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",  # overlong
    b"\xed\xa0\x80",  # UTF-16 surrogate D800
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"ok \xfe\xfe then ok",
    b"<s>\xff</s>",
]


def invalid_utf8():
    return INVALID_UTF8
