//! A small, allocation-free PostgreSQL lexer.
//!
//! It understands exactly as much of the PostgreSQL lexical grammar as the
//! classifier needs: whitespace, `--` and nested `/* */` comments, the string
//! literal forms (`'..'`, `E'..'`, `U&'..'`, `B'..'`, `X'..'`, `N'..'`),
//! dollar quoting, quoted identifiers (`".."`, `U&".."`), parameters (`$1`),
//! numbers, words and single-byte punctuation. It works on bytes, never
//! panics, and an unterminated construct simply runs to the end of the input.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// Placeholder for "no token" (used to pre-fill fixed-size buffers).
    Void,
    /// An unquoted identifier or keyword.
    Word,
    /// A quoted identifier; the token text is the content between the quotes.
    QIdent,
    /// A string, dollar-quoted string, number or parameter.
    Literal,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `;`
    Semi,
    /// `.`
    Dot,
    /// `,`
    Comma,
    /// Any other punctuation or operator byte.
    Op,
}

/// One token: its kind, its text and the byte offset where it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tok<'a> {
    pub(crate) kind: TokKind,
    pub(crate) text: &'a [u8],
    pub(crate) start: usize,
}

impl<'a> Tok<'a> {
    /// The placeholder token.
    pub(crate) const VOID: Tok<'static> = Tok {
        kind: TokKind::Void,
        text: b"",
        start: 0,
    };

    /// Is this the unquoted keyword `kw`, compared case-insensitively?
    /// `kw` must consist of lowercase ASCII letters only: then `b | 0x20 == k`
    /// holds exactly when `b` is `k` or its uppercase form.
    #[inline]
    pub(crate) fn is_kw(&self, kw: &[u8]) -> bool {
        debug_assert!(kw.iter().all(u8::is_ascii_lowercase), "{kw:?}");
        self.kind == TokKind::Word
            && self.text.len() == kw.len()
            && self.text.iter().zip(kw).all(|(b, k)| b | 0x20 == *k)
    }

    /// Is this the name `name`: case-insensitively when unquoted, exactly
    /// when quoted. `name` must be lowercase.
    #[inline]
    pub(crate) fn is_name(&self, name: &[u8]) -> bool {
        match self.kind {
            TokKind::Word => self.text.eq_ignore_ascii_case(name),
            TokKind::QIdent => self.text == name,
            _ => false,
        }
    }
}

/// Character classes, indexed by byte.
const START: u8 = 1;
const DIGIT: u8 = 2;
const DOLLAR: u8 = 4;
const SPACE: u8 = 8;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            START
        } else if c.is_ascii_digit() {
            DIGIT
        } else if c == b'$' {
            DOLLAR
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            SPACE
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Bytes that may start an identifier (PostgreSQL treats every byte >= 0x80
/// as a letter).
#[inline]
fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & START != 0
}

/// Bytes that may continue an identifier.
#[inline]
fn is_ident_cont(b: u8) -> bool {
    CLASS[b as usize] & (START | DIGIT | DOLLAR) != 0
}

/// Bytes that may continue a dollar-quote tag (no `$`).
#[inline]
fn is_tag_cont(b: u8) -> bool {
    CLASS[b as usize] & (START | DIGIT) != 0
}

/// Whitespace bytes.
#[inline]
fn is_space(b: u8) -> bool {
    CLASS[b as usize] & SPACE != 0
}

/// The position of the first byte at or after `from` that fails `keep`.
#[inline]
fn scan(src: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    match src.get(from..) {
        Some(rest) => from + rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len()),
        None => src.len(),
    }
}

/// A forward-only tokenizer over the bytes of one SQL text.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer positioned at the start of `src`.
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Lexer { src, pos: 0 }
    }

    #[inline]
    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    #[inline]
    fn tok(&self, kind: TokKind, start: usize, end: usize) -> Tok<'a> {
        Tok {
            kind,
            text: self.src.get(start..end).unwrap_or(b""),
            start,
        }
    }

    /// Skips a `--` comment starting at `self.pos`.
    fn line_comment(&mut self) {
        self.pos = scan(self.src, self.pos + 2, |b| b != b'\n' && b != b'\r');
    }

    /// Skips a (possibly nested) block comment starting at `self.pos`.
    fn block_comment(&mut self) {
        let mut depth = 1usize;
        let mut i = self.pos + 2;
        while let Some(b) = self.at(i) {
            if b == b'/' && self.at(i + 1) == Some(b'*') {
                depth += 1;
                i += 2;
            } else if b == b'*' && self.at(i + 1) == Some(b'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                i += 1;
            }
        }
        self.pos = i.min(self.src.len());
    }

    /// Scans a single-quoted string whose body starts at `from`; returns the
    /// position after the closing quote (or the end of input).
    fn string_end(&self, from: usize, backslash: bool) -> usize {
        let mut i = from;
        while let Some(b) = self.at(i) {
            if backslash && b == b'\\' {
                i += 2;
            } else if b == b'\'' {
                if self.at(i + 1) == Some(b'\'') {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.src.len()
    }

    /// A string literal token starting at `start` whose body starts at `from`.
    fn string(&mut self, start: usize, from: usize, backslash: bool) -> Tok<'a> {
        let end = self.string_end(from, backslash).min(self.src.len());
        self.pos = end;
        self.tok(TokKind::Literal, start, end)
    }

    /// A quoted identifier whose content starts at `from`.
    fn quoted_ident(&mut self, start: usize, from: usize) -> Tok<'a> {
        let mut i = from;
        while let Some(b) = self.at(i) {
            if b == b'"' {
                if self.at(i + 1) == Some(b'"') {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                return Tok {
                    kind: TokKind::QIdent,
                    text: self.src.get(from..i).unwrap_or(b""),
                    start,
                };
            }
            i += 1;
        }
        self.pos = self.src.len();
        Tok {
            kind: TokKind::QIdent,
            text: self.src.get(from..).unwrap_or(b""),
            start,
        }
    }

    /// A `$`: parameter, dollar-quoted string or a lone `$`.
    fn dollar(&mut self, start: usize) -> Tok<'a> {
        let mut i = start + 1;
        if self.at(i).is_some_and(|b| b.is_ascii_digit()) {
            i = scan(self.src, i, |b| b.is_ascii_digit());
            self.pos = i;
            return self.tok(TokKind::Literal, start, i);
        }
        if self.at(i).is_some_and(is_ident_start) {
            i = scan(self.src, i, is_tag_cont);
        }
        if self.at(i) != Some(b'$') {
            self.pos = start + 1;
            return self.tok(TokKind::Op, start, start + 1);
        }
        let body = i + 1;
        let delim = self.src.get(start..body).unwrap_or(b"$$");
        let rest = self.src.get(body..).unwrap_or(b"");
        let end = match rest.windows(delim.len()).position(|w| w == delim) {
            Some(p) => body + p + delim.len(),
            None => self.src.len(),
        };
        self.pos = end;
        self.tok(TokKind::Literal, start, end)
    }

    /// A numeric literal starting at `start`.
    fn number(&mut self, start: usize) -> Tok<'a> {
        let src = self.src;
        let digits = |i: usize| scan(src, i, |b| b.is_ascii_digit() || b == b'_');
        let mut i = digits(start);
        if self.at(i) == Some(b'.') && self.at(i + 1) != Some(b'.') {
            i = digits(i + 1);
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let j = if matches!(self.at(i + 1), Some(b'+' | b'-')) {
                i + 2
            } else {
                i + 1
            };
            if self.at(j).is_some_and(|b| b.is_ascii_digit()) {
                i = digits(j);
            }
        }
        // Hex/octal/binary forms and trailing junk.
        i = scan(self.src, i, |b| b.is_ascii_alphanumeric() || b == b'_');
        self.pos = i;
        self.tok(TokKind::Literal, start, i)
    }

    /// A word, or a string/identifier with a letter prefix (`E'`, `U&"`, ...).
    fn word(&mut self, start: usize, b: u8) -> Tok<'a> {
        let next = self.at(start + 1);
        match (b, next) {
            (b'e' | b'E', Some(b'\'')) => return self.string(start, start + 2, true),
            (b'b' | b'B' | b'x' | b'X' | b'n' | b'N', Some(b'\'')) => {
                return self.string(start, start + 2, false);
            }
            (b'u' | b'U', Some(b'&')) => match self.at(start + 2) {
                Some(b'\'') => return self.string(start, start + 3, false),
                Some(b'"') => return self.quoted_ident(start, start + 3),
                _ => {}
            },
            _ => {}
        }
        let end = scan(self.src, start + 1, is_ident_cont);
        self.pos = end;
        self.tok(TokKind::Word, start, end)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        loop {
            let start = self.pos;
            let b = self.at(start)?;
            let single = |l: &mut Self, kind| {
                l.pos = start + 1;
                Some(l.tok(kind, start, start + 1))
            };
            return match b {
                _ if is_space(b) => {
                    self.pos = scan(self.src, start + 1, is_space);
                    continue;
                }
                b'-' if self.at(start + 1) == Some(b'-') => {
                    self.line_comment();
                    continue;
                }
                b'/' if self.at(start + 1) == Some(b'*') => {
                    self.block_comment();
                    continue;
                }
                b'\'' => Some(self.string(start, start + 1, false)),
                b'"' => Some(self.quoted_ident(start, start + 1)),
                b'$' => Some(self.dollar(start)),
                b'(' => single(self, TokKind::LParen),
                b')' => single(self, TokKind::RParen),
                b';' => single(self, TokKind::Semi),
                b',' => single(self, TokKind::Comma),
                b'0'..=b'9' => Some(self.number(start)),
                b'.' if self.at(start + 1).is_some_and(|d| d.is_ascii_digit()) => {
                    Some(self.number(start))
                }
                b'.' => single(self, TokKind::Dot),
                _ if is_ident_start(b) => Some(self.word(start, b)),
                _ => single(self, TokKind::Op),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Lexer, TokKind};

    fn kinds(sql: &str) -> Vec<(TokKind, String)> {
        Lexer::new(sql.as_bytes())
            .map(|t| (t.kind, String::from_utf8_lossy(t.text).into_owned()))
            .collect()
    }

    #[test]
    fn lexes_the_tricky_forms() {
        use TokKind::*;
        let got = kinds(
            "SELECT /* a /* nested */ b */ E'\\'x', $t$ ; $$ $t$, $1, \"a\"\"b\", U&\"x\" -- c\n.5e3 x$y",
        );
        let want = [
            (Word, "SELECT"),
            (Literal, "E'\\'x'"),
            (Comma, ","),
            (Literal, "$t$ ; $$ $t$"),
            (Comma, ","),
            (Literal, "$1"),
            (Comma, ","),
            (QIdent, "a\"\"b"),
            (Comma, ","),
            (QIdent, "x"),
            (Literal, ".5e3"),
            (Word, "x$y"),
        ];
        let want: Vec<_> = want.iter().map(|(k, s)| (*k, (*s).to_owned())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unterminated_constructs_end_the_scan() {
        for sql in [
            "'abc", "E'\\", "\"abc", "$a$ body", "/* /* */", "U&'", "U&\"", "--",
        ] {
            let toks = kinds(sql);
            assert!(toks.len() <= 1, "{sql:?} -> {toks:?}");
        }
    }
}
