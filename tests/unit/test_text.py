"""Tests for melstream.text: the English character front end."""

import numpy as np
import pytest

from melstream.errors import MelstreamError, TextError
from melstream.text import FRONTENDS, MAX_CHARS_DEFAULT, SYMBOLS, CharFrontend, get_frontend


@pytest.fixture
def fe() -> CharFrontend:
    return CharFrontend()


def norm(text: str | bytes) -> str:
    return CharFrontend().normalize(text)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- symbols


def test_symbol_set_layout():
    assert SYMBOLS[0] == "_"
    assert SYMBOLS[1] == "~"
    assert SYMBOLS[2] == " "
    assert SYMBOLS[3:11] == tuple(",.?!;:-'")
    assert SYMBOLS[11:] == tuple("abcdefghijklmnopqrstuvwxyz")
    assert len(SYMBOLS) == len(set(SYMBOLS)) == 37


def test_frontend_symbols_and_name(fe):
    assert fe.symbols == SYMBOLS
    assert fe.num_symbols == 37
    assert fe.name == "english-chars"
    assert CharFrontend.name == "english-chars"
    assert fe.max_chars == MAX_CHARS_DEFAULT == 10_000


def test_docstring_documents_symbols_and_rules():
    doc = CharFrontend.__doc__ or ""
    for needle in ("NFKD", "UTF-8", "minus", "ordinal", "percent", "dollar", "nothing to speak", "max_chars"):
        assert needle in doc


# ------------------------------------------------------------------------------------------ registry


def test_get_frontend_returns_instance():
    frontend = get_frontend("english-chars")
    assert isinstance(frontend, CharFrontend)
    assert FRONTENDS["english-chars"] is CharFrontend and sorted(FRONTENDS) == ["english-chars", "espeak-phonemes"]


def test_get_frontend_passes_options():
    assert get_frontend("english-chars", max_chars=5).max_chars == 5


def test_get_frontend_unknown_name_lists_known():
    with pytest.raises(TextError) as info:
        get_frontend("klingon")
    assert "klingon" in str(info.value)
    assert "english-chars" in str(info.value)


def test_get_frontend_unknown_option():
    with pytest.raises(TextError, match="bad options"):
        get_frontend("english-chars", speed=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_bad_max_chars(bad):
    with pytest.raises(TextError, match="max_chars"):
        CharFrontend(max_chars=bad)


def test_text_error_is_melstream_error():
    assert issubclass(TextError, MelstreamError)


# ------------------------------------------------------------------------------------ rule 1: bytes


def test_bytes_input_decoded(fe):
    assert fe.normalize("café".encode()) == "cafe"  # type: ignore[arg-type]
    assert fe.encode(b"hi").tolist() == fe.encode("hi").tolist()


def test_invalid_utf8_reports_offset(fe):
    with pytest.raises(TextError) as info:
        fe.encode(b"abc\xffdef")
    message = str(info.value)
    assert "UTF-8" in message
    assert "offset 3" in message
    assert "0xff" in message


def test_truncated_utf8_reports_offset(fe):
    with pytest.raises(TextError, match="offset 1"):
        fe.encode("hé".encode()[:-1])  # b"h\xc3" is cut mid-character


def test_non_text_input_rejected(fe):
    with pytest.raises(TextError, match="str or UTF-8 bytes"):
        fe.encode(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- rule 2: unicode/typography


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("café", "cafe"),
        ("naïve résumé", "naive resume"),
        ("Ångström", "angstrom"),
        ("ｆｕｌｌ ｗｉｄｔｈ", "full width"),
        ("ﬁne", "fine"),
        ("it’s", "it's"),
        ("‘quoted’", "'quoted'"),
        ("“hello”", "hello"),
        ("he said “hi” to me", "he said hi to me"),
        ("a–b", "a-b"),
        ("a—b", "a-b"),
        ("wait…", "wait..."),
        ("Straße", "strasse"),
    ],
)
def test_unicode_and_typography(text, expected):
    assert norm(text) == expected


# ------------------------------------------------------------------------------------ rule 3: numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", "zero"),
        ("7", "seven"),
        ("13", "thirteen"),
        ("21", "twenty one"),
        ("40", "forty"),
        ("100", "one hundred"),
        ("101", "one hundred one"),
        ("115", "one hundred fifteen"),
        ("1000", "one thousand"),
        ("1,234", "one thousand two hundred thirty four"),
        ("1234", "one thousand two hundred thirty four"),
        ("1,000,000", "one million"),
        ("2,000,001", "two million one"),
        ("1999", "one thousand nine hundred ninety nine"),  # years are plain cardinals
        ("2024", "two thousand twenty four"),
        ("-5", "minus five"),
        ("it is -12 outside", "it is minus twelve outside"),
        ("3.14", "three point one four"),
        ("0.05", "zero point zero five"),
        ("-2.5", "minus two point five"),
        ("1,234.5", "one thousand two hundred thirty four point five"),
        ("007", "zero zero seven"),
    ],
)
def test_cardinals_and_decimals(text, expected):
    assert norm(text) == expected


def test_largest_number_in_words():
    assert norm("999,999,999,999") == (
        "nine hundred ninety nine billion nine hundred ninety nine million "
        "nine hundred ninety nine thousand nine hundred ninety nine"
    )
    assert norm("1000000000") == "one billion"


def test_long_number_read_digit_by_digit():
    assert norm("1000000000000") == "one" + " zero" * 12
    assert norm("1,000,000,000,000") == "one" + " zero" * 12
    assert norm("12345678901234567890") == (
        "one two three four five six seven eight nine zero one two three four five six seven eight nine zero"
    )


def test_hyphen_between_words_or_digits_is_not_a_sign():
    assert norm("10-20") == "ten-twenty"
    assert norm("covid-19") == "covid-nineteen"
    assert norm("5 - 3") == "five - three"


def test_no_hyphens_in_generated_words():
    assert "-" not in norm("99 123456 777th")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1st", "first"),
        ("2nd", "second"),
        ("3rd", "third"),
        ("4th", "fourth"),
        ("5th", "fifth"),
        ("8th", "eighth"),
        ("9th", "ninth"),
        ("11th", "eleventh"),
        ("12th", "twelfth"),
        ("20th", "twentieth"),
        ("23rd", "twenty third"),
        ("21ST", "twenty first"),
        ("101th", "one hundred first"),
        ("100th", "one hundredth"),
        ("1,000,000th", "one millionth"),
        ("the 3rd of may", "the third of may"),
    ],
)
def test_ordinals(text, expected):
    assert norm(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50%", "fifty percent"),
        ("2.5%", "two point five percent"),
        ("-3%", "minus three percent"),
        ("100 %", "one hundred percent"),
    ],
)
def test_percentages(text, expected):
    assert norm(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$2.50", "two dollars fifty cents"),
        ("$2.5", "two dollars fifty cents"),
        ("$2.00", "two dollars"),
        ("$1.01", "one dollar one cent"),
        ("$0.99", "ninety nine cents"),
        ("$0", "zero dollars"),
        ("$1,000,000", "one million dollars"),
        ("$1.125", "one point one two five dollars"),
        ("-$5", "minus five dollars"),
        ("it costs $3.", "it costs three dollars."),
    ],
)
def test_currency(text, expected):
    assert norm(text) == expected


def test_numbers_touching_letters_get_spaces():
    assert norm("abc123def") == "abc one hundred twenty three def"
    assert norm("5kg") == "five kg"


def test_number_at_sentence_end_keeps_period():
    assert norm("I have 5.") == "i have five."


# ------------------------------------------------------------------------------------ rule 4: symbols


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("R&D", "r and d"),
        ("2+2=4", "two plus two equals four"),
        ("me@home", "me at home"),
        ("a & b", "a and b"),
        ("100 %", "one hundred percent"),
    ],
)
def test_symbols_to_words(text, expected):
    assert norm(text) == expected


# ------------------------------------------------------------------------- rule 5: case, punctuation


def test_lowercase():
    assert norm("HeLLo WORLD") == "hello world"


def test_kept_punctuation():
    assert norm("Hi, there. Why? Now! a; b: c - d's") == "hi, there. why? now! a; b: c - d's"


def test_parentheses_become_commas():
    assert norm("hello (world) foo.") == "hello, world, foo."
    assert norm("(aside)") == "aside"
    assert norm("end (really).") == "end, really."
    assert norm("a [b] {c}") == "a, b, c"


def test_quotes_removed():
    assert norm('he said "no" twice') == "he said no twice"
    assert norm("«bonjour»") == "bonjour"


def test_whitespace_collapsed_and_stripped():
    assert norm("  hello \n\n world\t again  ") == "hello world again"
    assert norm("a\r\nb") == "a b"
    assert norm("a\u00a0b") == "a b"


def test_control_characters_removed():
    assert norm("a\x00b\x07c") == "abc"
    assert norm("\ufeffhello\u200b") == "hello"


def test_space_before_punctuation_removed():
    assert norm("hello , world !") == "hello, world!"


# ------------------------------------------------------------------------------------ rule 6: dropped


def test_emoji_and_cjk_dropped():
    assert norm("hello 😀 world") == "hello world"
    assert norm("hi 日本語 there") == "hi there"
    assert norm("price in €") == "price in"


def test_reserved_symbols_never_produced(fe):
    out = fe.normalize("a_b~c")
    assert out == "a b c"
    assert "_" not in out and "~" not in out


def test_normalize_output_only_speakable_symbols():
    text = "Ünïcödé — “quotes”, 1,234.5 & $9.99! (ok) 😀 🙂 tabs\tand\nnewlines #tag *bold* a/b <x>"
    out = norm(text)
    assert set(out) <= set(SYMBOLS[2:])
    assert out == out.strip()
    assert "  " not in out


# ------------------------------------------------------------------------------------- rule 7: errors


@pytest.mark.parametrize("text", ["", " ", "   \n\t  ", "...", "?!,;:", "-", "'", "😀", "()", b""])
def test_nothing_to_speak(fe, text):
    with pytest.raises(TextError, match="nothing to speak"):
        fe.encode(text)
    with pytest.raises(TextError, match="nothing to speak"):
        fe.normalize(text)


def test_letterless_text_keeps_its_message(fe):
    with pytest.raises(TextError) as info:
        fe.encode(" ?! ")
    assert str(info.value) == "text has nothing to speak: ' ?! ' has no letters after normalisation"


@pytest.mark.parametrize("text, says", [
    ("你好", "'你好' is written in a script it does not speak (CJK)"),
    ("日本", "'日本' is written in a script it does not speak (CJK)"),
    ("こんにちは。", "is written in a script it does not speak (Hiragana)"),
    ("안녕하세요", "is written in a script it does not speak (Hangul)"),
    ("Привет, мир!", "'Привет, мир!' is written in a script it does not speak (Cyrillic)"),
    ("مرحبا", "is written in a script it does not speak (Arabic)"),
    ("٣٤", "is written in a script it does not speak (Arabic)"),  # Arabic-Indic digits
    ("Αθήνα", "is written in a script it does not speak (Greek)"),
    ("שלום", "is written in a script it does not speak (Hebrew)"),
    ("你好, привет; مرحبا!", "is written in scripts it does not speak (CJK, Cyrillic, Arabic)"),
    ("ŋə", "'ŋə' has letters it does not know (ŋ, ə)"),
    ("你 ŋ", "is written in a script it does not speak (CJK) and has letters it does not know (ŋ)"),
])
def test_text_no_voice_letter_can_pronounce_says_so(fe, text, says):
    """Letters, but none this voice speaks: said in those words, naming the scripts (not "no letters")."""
    for call in (fe.encode, fe.normalize):
        with pytest.raises(TextError) as info:
            call(text)
        message = str(info.value)
        assert message.startswith("text has nothing this voice can pronounce: "), message
        assert says in message and "no letters" not in message, message


def test_foreign_letters_beside_speakable_text_are_dropped_not_refused(fe):
    assert fe.normalize("hello 你好 привет world") == "hello world"


def test_exactly_max_chars_accepted():
    fe = CharFrontend(max_chars=10)
    assert fe.normalize("a" * 10) == "a" * 10
    assert fe.encode("a" * 10).shape == (11,)


def test_max_chars_plus_one_rejected():
    fe = CharFrontend(max_chars=10)
    with pytest.raises(TextError) as info:
        fe.encode("a" * 11)
    assert str(info.value) == "text is 11 characters; the limit is 10"


def test_default_limit(fe):
    assert fe.normalize("a" * MAX_CHARS_DEFAULT) == "a" * MAX_CHARS_DEFAULT
    with pytest.raises(TextError, match="text is 10001 characters; the limit is 10000"):
        fe.normalize("a" * (MAX_CHARS_DEFAULT + 1))


def test_limit_counts_characters_before_normalisation():
    fe = CharFrontend(max_chars=3)
    assert fe.normalize("100") == "one hundred"  # expansion beyond the limit is fine
    with pytest.raises(TextError, match="limit is 3"):
        fe.normalize("a  b")


def test_limit_counts_decoded_characters_for_bytes():
    fe = CharFrontend(max_chars=2)
    assert fe.encode("éé".encode()).tolist()[:-1] == [_id("e"), _id("e")]


# ------------------------------------------------------------------------------------------- encode


def _id(symbol: str) -> int:
    return SYMBOLS.index(symbol)


def test_encode_values(fe):
    ids = fe.encode("Hi!")
    assert ids.dtype == np.int64
    assert ids.ndim == 1
    assert ids.tolist() == [_id("h"), _id("i"), _id("!"), 1]


def test_encode_ends_with_eos_and_ids_in_range(fe):
    for text in ["hello world", "It's 3.14, isn't it?", "$2.50 & 50% - ok; fine:", "Zebra"]:
        ids = fe.encode(text)
        assert ids[-1] == 1
        assert (ids[:-1] >= 2).all()
        assert (ids < fe.num_symbols).all()
        assert 1 not in ids[:-1].tolist() and 0 not in ids.tolist()
        assert "".join(SYMBOLS[i] for i in ids[:-1]) == fe.normalize(text)


def test_determinism(fe):
    text = "Dr. Smith paid $1,234.56 on the 3rd — 50% “off”! 😀"
    first = fe.encode(text)
    for _ in range(3):
        assert np.array_equal(CharFrontend().encode(text), first)
        assert CharFrontend().normalize(text) == fe.normalize(text)
    assert fe.normalize(text) == (
        "dr. smith paid one thousand two hundred thirty four dollars fifty six cents on the third - fifty percent off!"
    )
