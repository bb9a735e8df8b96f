//! A JSON value with cJSON's observable semantics, which mosquitto's control API and file loader inherit.
//!
//! Why not `serde_json::Value`: mosquitto looks object keys up **case-insensitively** and takes the
//! **first** of duplicate keys, keeps member order, accepts strings that are not valid UTF-8 (the
//! command then answers "… not valid UTF-8"), truncates strings at an embedded NUL (C strings),
//! ignores trailing bytes after the top-level value, and saturates numbers into `int`. Every one of
//! those is visible in a reply, so the parser and the two printers (compact for replies, cJSON's
//! tab-indented pretty form for `dynamic-security.json`) live here.

use std::fmt::Write as _;

/// cJSON refuses documents nested deeper than this (`CJSON_NESTING_LIMIT`).
const NESTING_LIMIT: usize = 1000;

/// A parsed or constructed JSON value. Strings are bytes: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(Vec<u8>),
    Array(Vec<Json>),
    /// Members in document order; duplicates are kept and lookups return the first.
    Object(Vec<(Vec<u8>, Json)>),
}

impl Json {
    pub fn str(s: &str) -> Json {
        Json::String(s.as_bytes().to_vec())
    }

    pub fn int(i: i64) -> Json {
        Json::Number(i as f64)
    }

    /// An empty object, to be filled with [`Json::push`].
    pub fn object() -> Json {
        Json::Object(Vec::new())
    }

    /// Appends a member to an object (no-op on other variants). Builder style keeps reply
    /// construction readable: `Json::object().with("command", Json::str("x"))`.
    pub fn with(mut self, key: &str, value: Json) -> Json {
        self.push(key, value);
        self
    }

    pub fn push(&mut self, key: &str, value: Json) {
        if let Json::Object(members) = self {
            members.push((key.as_bytes().to_vec(), value));
        }
    }

    /// cJSON_GetObjectItem: the first member whose key equals `key` ignoring ASCII case.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => {
                members.iter().find(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes())).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// cJSON's `valueint`: the double truncated toward zero and saturated to the C `int` range.
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Json::Number(n) => Some(saturate_to_int(*n)),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// cJSON_PrintUnformatted: no whitespace at all.
    pub fn to_compact(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.print(&mut out, None);
        out
    }

    /// cJSON_Print: tab indentation, `"key":<TAB>value`, arrays inline with `, `.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.print(&mut out, Some(0));
        out
    }

    fn print(&self, out: &mut Vec<u8>, depth: Option<usize>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(n) => print_number(*n, out),
            Json::String(s) => print_string(s, out),
            Json::Array(items) => {
                // cJSON increments its depth for arrays too, which is why objects nested in arrays
                // are indented two tabs deeper than their parent key.
                let inner = depth.map(|d| d + 1);
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                        if depth.is_some() {
                            out.push(b' ');
                        }
                    }
                    item.print(out, inner);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                let inner = depth.map(|d| d + 1);
                out.push(b'{');
                if depth.is_some() {
                    out.push(b'\n');
                }
                for (i, (key, value)) in members.iter().enumerate() {
                    if let Some(d) = inner {
                        out.extend(std::iter::repeat_n(b'\t', d));
                    }
                    print_string(key, out);
                    out.push(b':');
                    if depth.is_some() {
                        out.push(b'\t');
                    }
                    value.print(out, inner);
                    if i + 1 < members.len() {
                        out.push(b',');
                    }
                    if depth.is_some() {
                        out.push(b'\n');
                    }
                }
                if let Some(d) = depth {
                    out.extend(std::iter::repeat_n(b'\t', d));
                }
                out.push(b'}');
            }
        }
    }
}

fn saturate_to_int(n: f64) -> i32 {
    if n.is_nan() {
        // cJSON compares against INT_MAX/INT_MIN, both comparisons fail, and the C cast of NaN
        // yields INT_MIN on x86-64; NaN cannot come out of the parser anyway.
        i32::MIN
    } else if n >= i32::MAX as f64 {
        i32::MAX
    } else if n <= i32::MIN as f64 {
        i32::MIN
    } else {
        n as i32
    }
}

fn print_number(n: f64, out: &mut Vec<u8>) {
    let mut s = String::new();
    if n.fract() == 0.0 && n.abs() < 1e15 {
        let _ = write!(s, "{}", n as i64);
    } else if n.is_finite() {
        let _ = write!(s, "{n}");
    } else {
        s.push_str("null");
    }
    out.extend_from_slice(s.as_bytes());
}

fn print_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                let _ = write!(VecWriter(out), "\\u{:04x}", c);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Why a document was refused. cJSON reports no detail; the offset helps file-load diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON near byte {offset}")]
pub struct ParseError {
    pub offset: usize,
}

/// Parses the first JSON value in `input`, ignoring anything after it (cJSON_Parse semantics).
pub fn parse(input: &[u8]) -> Result<Json, ParseError> {
    let mut parser = Parser { input, pos: 0 };
    if parser.input.starts_with(b"\xEF\xBB\xBF") {
        parser.pos = 3;
    }
    parser.skip_whitespace();
    parser.value(0)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error<T>(&self) -> Result<T, ParseError> {
        Err(ParseError { offset: self.pos })
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// cJSON treats every byte <= 32 as whitespace, and a NUL as the end of the buffer.
    fn skip_whitespace(&mut self) {
        while let Some(b) = self.peek() {
            if b != 0 && b <= 32 {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        let rest = &self.input[self.pos..];
        if rest.starts_with(b"null") {
            self.pos += 4;
            return Ok(Json::Null);
        }
        if rest.starts_with(b"false") {
            self.pos += 5;
            return Ok(Json::Bool(false));
        }
        if rest.starts_with(b"true") {
            self.pos += 4;
            return Ok(Json::Bool(true));
        }
        match self.peek() {
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            _ => self.error(),
        }
    }

    /// strtod's view of the number: sign, digits, optional fraction and exponent. cJSON collects
    /// the run of `0-9 + - . e E` and lets strtod take the longest valid prefix of it.
    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.pos;
        let bytes = self.input;
        let mut end = start;
        if matches!(bytes.get(end), Some(b'+' | b'-')) {
            end += 1;
        }
        let mantissa_start = end;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let mut digits = end - mantissa_start;
        if bytes.get(end) == Some(&b'.') {
            let mut frac_end = end + 1;
            while bytes.get(frac_end).is_some_and(u8::is_ascii_digit) {
                frac_end += 1;
            }
            digits += frac_end - end - 1;
            end = frac_end;
        }
        if digits == 0 {
            return self.error();
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut exp_end = end + 1;
            if matches!(bytes.get(exp_end), Some(b'+' | b'-')) {
                exp_end += 1;
            }
            let exp_digits_start = exp_end;
            while bytes.get(exp_end).is_some_and(u8::is_ascii_digit) {
                exp_end += 1;
            }
            if exp_end > exp_digits_start {
                end = exp_end;
            }
        }
        let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| ParseError { offset: start })?;
        let value: f64 = text.parse().map_err(|_| ParseError { offset: start })?;
        self.pos = end;
        Ok(Json::Number(value))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self.input.get(self.pos..self.pos + 4).ok_or(ParseError { offset: self.pos })?;
        let text = std::str::from_utf8(digits).map_err(|_| ParseError { offset: self.pos })?;
        let value = u32::from_str_radix(text, 16).map_err(|_| ParseError { offset: self.pos })?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return self.error();
        }
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<Vec<u8>, ParseError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.error();
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(esc) = self.peek() else {
                        return self.error();
                    };
                    self.pos += 1;
                    match esc {
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'"' | b'\\' | b'/' => out.push(esc),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xDC00..=0xDFFF).contains(&first) {
                                return self.error();
                            } else if (0xD800..=0xDBFF).contains(&first) {
                                if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return self.error();
                                }
                                self.pos += 2;
                                let second = self.hex4()?;
                                if !(0xDC00..=0xDFFF).contains(&second) {
                                    return self.error();
                                }
                                0x10000 + (((first & 0x3FF) << 10) | (second & 0x3FF))
                            } else {
                                first
                            };
                            let ch = char::from_u32(code).ok_or(ParseError { offset: self.pos })?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.error(),
                    }
                }
                other => out.push(other),
            }
        }
        // Every consumer in mosquitto reads the value as a C string.
        if let Some(nul) = out.iter().position(|&b| b == 0) {
            out.truncate(nul);
        }
        Ok(out)
    }

    fn array(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth > NESTING_LIMIT {
            return self.error();
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.error(),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth > NESTING_LIMIT {
            return self.error();
        }
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return self.error();
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return self.error();
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => return self.error(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_first_wins() {
        let v = parse(br#"{"UserName":"a","username":"b"}"#).unwrap();
        assert_eq!(v.get("username").and_then(Json::as_bytes), Some(&b"a"[..]));
    }

    #[test]
    fn trailing_garbage_is_ignored_like_cjson_parse() {
        assert!(parse(br#"{"commands":[]} trailing"#).is_ok());
    }

    #[test]
    fn numbers_saturate_and_truncate() {
        assert_eq!(parse(b"5.7").unwrap().as_int(), Some(5));
        assert_eq!(parse(b"-5.7").unwrap().as_int(), Some(-5));
        assert_eq!(parse(b"1e20").unwrap().as_int(), Some(i32::MAX));
        assert_eq!(parse(b"-1e20").unwrap().as_int(), Some(i32::MIN));
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [&b""[..], b"{", b"[1,]", b"{\"a\" 1}", b"\"\\x\"", b"-", b"nul", b"\"\\udc00\""] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn strings_keep_invalid_utf8_and_stop_at_nul() {
        assert_eq!(parse(b"\"a\xffb\"").unwrap(), Json::String(b"a\xffb".to_vec()));
        assert_eq!(parse(br#""ab\u0000cd""#).unwrap(), Json::str("ab"));
        assert_eq!(parse(br#""\ud83d\ude00""#).unwrap(), Json::str("\u{1F600}"));
    }

    #[test]
    fn nesting_limit_is_enforced_without_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn compact_printing_escapes_like_cjson() {
        let v = Json::object().with("k", Json::str("a\"b\\c\u{1}\n/é"));
        assert_eq!(v.to_compact(), r#"{"k":"a\"b\\c\u0001\n/é"}"#.as_bytes().to_vec());
    }

    #[test]
    fn pretty_printing_matches_cjson_layout() {
        let v = Json::object()
            .with("a", Json::Array(vec![Json::object().with("b", Json::int(1)), Json::object()]))
            .with("c", Json::object().with("d", Json::Bool(true)));
        let expected = "{\n\t\"a\":\t[{\n\t\t\t\"b\":\t1\n\t\t}, {\n\t\t}],\n\t\"c\":\t{\n\t\t\"d\":\ttrue\n\t}\n}";
        assert_eq!(String::from_utf8(v.to_pretty()).unwrap(), expected);
    }
}
