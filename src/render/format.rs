//! marathon-lb's `{placeholder}` templates: Python's `str.format` with keyword arguments only,
//! reproduced so that a marathon-lb template (label, environment variable or bare file) renders
//! byte for byte as it did there. Pure string work; knows nothing of HAProxy.
//!
//! Supported: `{name}`, `{{` / `}}` escapes, the conversions `!s` / `!r` / `!a`, and Python's
//! format-spec mini-language for `str` and `int` values (fill, align, sign, `#`, `0`, width,
//! `,` / `_` grouping, precision and every presentation type, the float ones included). Anything
//! marathon-lb would have raised on (an unknown key, a positional `{}` / `{0}`, a stray `}`, a
//! spec the value's type refuses) is an error naming the placeholder. Index lookups on a string
//! (`{backend[0]}`) work as in Python; attribute lookups, whose Python output would name a
//! memory address, are refused.
//!
//! Bounded where Python is not, since a template label is an app owner's text: a width or
//! precision above [`MAX_WIDTH`] is an error, and so is a template whose output would grow far
//! beyond its text and its values (see [`output_limit`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One keyword argument's value, typed as marathon-lb passed it (a Python `str`, `int` or
/// `None`), since the type decides how it prints and which format specs apply. Text is
/// borrowed where it can be: a server line's values are the model's own strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// Python's `None`, printed `None`.
    None,
}

impl<'a> Value<'a> {
    pub fn str(text: impl Into<Cow<'a, str>>) -> Value<'a> {
        Value::Str(text.into())
    }

    /// `Some(text)` → the text, `None` → Python's `None`.
    pub fn opt_str(text: Option<&'a str>) -> Value<'a> {
        text.map_or(Value::None, Value::str)
    }

    pub fn opt_int(number: Option<i64>) -> Value<'a> {
        number.map_or(Value::None, Value::Int)
    }
}

impl Value<'_> {
    /// The length of the printed value, without printing it.
    fn printed_len(&self) -> usize {
        match self {
            Value::Str(text) => text.len(),
            Value::Int(number) => number
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |digits| digits as usize + 1 + usize::from(*number < 0)),
            Value::None => "None".len(),
        }
    }

    /// Appends the value as `str()` prints it.
    fn print_into(&self, out: &mut String) {
        match self {
            Value::Str(text) => out.push_str(text),
            Value::Int(number) => push_decimal(out, *number),
            Value::None => out.push_str("None"),
        }
    }
}

/// `number` in decimal, as `write!(out, "{number}")` prints it, without the formatting
/// machinery: a port or a server id is printed on every server line.
fn push_decimal(out: &mut String, number: i64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = number.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if number < 0 {
        out.push('-');
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(text) => f.write_str(text),
            Value::Int(number) => write!(f, "{number}"),
            Value::None => f.write_str("None"),
        }
    }
}

/// The keyword arguments of one `.format(...)` call, in the order marathon-lb passes them.
pub type Vars<'a> = [(&'static str, Value<'a>)];

/// Why a template did not format; the message is meant to be shown with the template's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

fn error(message: impl Into<String>) -> FormatError {
    FormatError(message.into())
}

/// The widest field and the longest precision a format spec may ask for. Python takes any
/// number (and runs out of memory on `{backend:>99999999999}`); marathon-lb's templates use no
/// width at all, and 1 KiB is wider than any configuration line needs while keeping one
/// placeholder's output small.
pub const MAX_WIDTH: usize = 1024;

/// Slack on top of the template's own length in [`output_limit`]: room for widths and for
/// values repeated a few times.
const OUTPUT_SLACK: usize = 64 * 1024;

/// The most one `format` call may produce: the template's text, each value twice over, and
/// [`OUTPUT_SLACK`]. A template repeating a long value thousands of times would otherwise turn a
/// short label into gigabytes; no real template comes near the limit.
pub fn output_limit(template: &str, vars: &Vars<'_>) -> usize {
    let values: usize = vars.iter().map(|(_, value)| value.printed_len()).sum();
    template.len() + 2 * values + OUTPUT_SLACK
}

/// `template.format(**vars)` as Python does it.
pub fn format(template: &str, vars: &Vars<'_>) -> Result<String, FormatError> {
    let mut out = String::with_capacity(template.len() + 64);
    Compiled::new(template).fill(vars, &mut out)?;
    Ok(out)
}

/// A template scanned once (its literal runs and its fields, up to its first syntax error), so
/// that the sections filled once per service or per server line are not scanned again each
/// time. Filling it gives what [`format`] gives, errors included and in the same order.
#[derive(Debug, Clone)]
pub struct Compiled {
    text: String,
    pieces: Vec<Piece>,
}

/// One piece of a [`Compiled`] template, each part held on its own so that filling does not
/// slice the text again.
#[derive(Debug, Clone)]
enum Piece {
    /// Text copied as it is (a doubled brace is one brace).
    Literal(Box<str>),
    Field(Box<Field>),
    /// The template's first syntax error, met where it stands: every piece before it is
    /// filled first, as Python's scan reports an unknown name before a later stray brace.
    Fail(FormatError),
}

/// One `{name[lookups]!conversion:spec}`, split once; the name is looked up when filled.
#[derive(Debug)]
struct Field {
    /// The whole field between its braces, for messages.
    text: Box<str>,
    name: Box<str>,
    lookups: Box<str>,
    conversion: Option<char>,
    spec: Box<str>,
    /// Where in the variables the name was found last: a call site passes its variables in
    /// one order, so the name is mostly compared there alone instead of with each name before
    /// it (a server line's fields compared ~4 names each). Only a hint: any value is checked.
    last_at: AtomicUsize,
}

impl Clone for Field {
    fn clone(&self) -> Field {
        Field {
            text: self.text.clone(),
            name: self.name.clone(),
            lookups: self.lookups.clone(),
            conversion: self.conversion,
            spec: self.spec.clone(),
            last_at: AtomicUsize::new(self.last_at.load(Ordering::Relaxed)),
        }
    }
}

impl Field {
    /// The value of the field's name in `vars`.
    fn value_in<'v, 'a>(&self, vars: &'v Vars<'a>) -> Option<&'v Value<'a>> {
        let name = &*self.name;
        let hint = self.last_at.load(Ordering::Relaxed);
        if let Some((_, value)) = vars.get(hint).filter(|(key, _)| *key == name) {
            return Some(value);
        }
        let at = vars.iter().position(|(key, _)| *key == name)?;
        self.last_at.store(at, Ordering::Relaxed);
        Some(&vars[at].1)
    }

    /// A bare `{name}`: the value printed as it is.
    fn is_plain(&self) -> bool {
        self.lookups.is_empty() && self.conversion.is_none() && self.spec.is_empty()
    }

    /// Appends this `{field!conversion:spec}` filled from `vars`.
    fn fill(&self, vars: &Vars<'_>, out: &mut String) -> Result<(), FormatError> {
        let field = self;
        let name = &*field.name;
        let Some(value) = field.value_in(vars) else {
            return Err(error(format!(
                "unknown placeholder {{{name}}}; this template knows {}",
                known_names(vars)
            )));
        };
        if field.is_plain() {
            // The common case, printed without a value or a string of its own.
            value.print_into(out);
            return Ok(());
        }
        let (text, lookups, spec) = (&*field.text, &*field.lookups, &*field.spec);
        let value = look_up(value, lookups, text)?;
        let value = match field.conversion {
            None => value,
            Some('s') => Cow::Owned(Value::str(value.to_string())),
            Some('r') => Cow::Owned(Value::str(python_repr(&value, false))),
            Some('a') => Cow::Owned(Value::str(python_repr(&value, true))),
            Some(other) => return Err(error(format!("unknown conversion !{other} in {{{text}}}"))),
        };
        if spec.is_empty() {
            value.print_into(out);
            return Ok(());
        }
        out.push_str(&apply_spec(&value, spec).map_err(|why| error(format!("{{{text}}}: {why}")))?);
        Ok(())
    }
}

impl Compiled {
    pub fn new(template: &str) -> Compiled {
        let mut pieces = Vec::new();
        // Text between braces is kept a run at a time.
        let mut copied = 0;
        let bytes = template.as_bytes();
        while let Some(offset) = bytes[copied..]
            .iter()
            .position(|&byte| byte == b'{' || byte == b'}')
        {
            let at = copied + offset;
            if at > copied {
                pieces.push(Piece::Literal(template[copied..at].into()));
            }
            let doubled = bytes.get(at + 1) == Some(&bytes[at]);
            if doubled {
                pieces.push(Piece::Literal(template[at..=at].into()));
                copied = at + 2;
                continue;
            }
            if bytes[at] == b'}' {
                pieces.push(Piece::Fail(error(
                    "single '}' encountered (write '}}' for a literal brace)",
                )));
                return Compiled::of(template, pieces);
            }
            let start = at + 1;
            match field_end(template, start).and_then(|end| parse_field(&template[start..end])) {
                Ok(field) => {
                    // `field_end` stops at the closing `}`, one byte.
                    copied = start + field.text.len() + 1;
                    pieces.push(Piece::Field(Box::new(field)));
                }
                Err(err) => {
                    pieces.push(Piece::Fail(err));
                    return Compiled::of(template, pieces);
                }
            }
        }
        if copied < template.len() {
            pieces.push(Piece::Literal(template[copied..].into()));
        }
        Compiled::of(template, pieces)
    }

    fn of(template: &str, pieces: Vec<Piece>) -> Compiled {
        Compiled {
            text: template.to_string(),
            pieces,
        }
    }

    /// The template's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends `text.format(**vars)` to `out`. On an error, `out` holds a part of the
    /// output; callers drop it with the error.
    pub fn fill(&self, vars: &Vars<'_>, out: &mut String) -> Result<(), FormatError> {
        let limit = output_limit(&self.text, vars);
        let start = out.len();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(field) => {
                    field.fill(vars, out)?;
                    if out.len() - start > limit {
                        return Err(error(format!(
                            "the template expands to more than {limit} bytes (its text, each \
                             value twice and {OUTPUT_SLACK} bytes of padding)"
                        )));
                    }
                }
                Piece::Fail(err) => return Err(err.clone()),
            }
        }
        Ok(())
    }
}

/// Splits a field (the text between its braces) into its parts and refuses a positional one,
/// as Python does before it looks the name up.
fn parse_field(field: &str) -> Result<Field, FormatError> {
    let (name_and_lookups, conversion, spec) = split_field(field)?;
    let name_end = name_and_lookups
        .find(['.', '['])
        .unwrap_or(name_and_lookups.len());
    let name = &name_and_lookups[..name_end];
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(format!(
            "positional placeholder {{{field}}} is not supported; use a name such as {{backend}}"
        )));
    }
    Ok(Field {
        text: field.into(),
        name: name.into(),
        lookups: name_and_lookups[name_end..].into(),
        conversion,
        spec: spec.into(),
        last_at: AtomicUsize::new(0),
    })
}

/// Where the field opened just before `start` closes: the first `}` outside the brackets of
/// its name (Python reads `{name[}]}` as the key `}`).
fn field_end(template: &str, start: usize) -> Result<usize, FormatError> {
    let mut in_name = true;
    let mut in_brackets = false;
    for (offset, ch) in template[start..].char_indices() {
        match ch {
            ']' if in_brackets => in_brackets = false,
            _ if in_brackets => {}
            '[' if in_name => in_brackets = true,
            ':' | '!' => in_name = false,
            '}' => return Ok(start + offset),
            '{' => {
                return Err(error(format!(
                    "nested placeholder in {:?} is not supported",
                    &template[start - 1..]
                )))
            }
            _ => {}
        }
    }
    Err(error(
        "'{' without a matching '}' (write '{{' for a literal brace)",
    ))
}

/// Splits `name[0]!r:>8` into the field name, the conversion and the spec, as Python does:
/// `:` and `!` inside brackets belong to the name.
fn split_field(field: &str) -> Result<(&str, Option<char>, &str), FormatError> {
    let mut in_brackets = false;
    let mut name_end = field.len();
    for (at, ch) in field.char_indices() {
        match ch {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            ':' | '!' if !in_brackets => {
                name_end = at;
                break;
            }
            _ => {}
        }
    }
    let (name, rest) = field.split_at(name_end);
    if let Some(after_bang) = rest.strip_prefix('!') {
        let mut chars = after_bang.chars();
        let conversion = chars
            .next()
            .ok_or_else(|| error(format!("missing conversion after '!' in {{{field}}}")))?;
        let rest = chars.as_str();
        return match rest.strip_prefix(':') {
            Some(spec) => Ok((name, Some(conversion), spec)),
            None if rest.is_empty() => Ok((name, Some(conversion), "")),
            None => Err(error(format!(
                "expected ':' after the conversion in {{{field}}}"
            ))),
        };
    }
    Ok((name, None, rest.strip_prefix(':').unwrap_or("")))
}

/// Applies the `[index]` lookups that follow the argument name, as Python's `str.format` does
/// on a `str`: a decimal index picks one character; anything else is the error Python raises.
fn look_up<'a, 'v>(
    value: &'a Value<'v>,
    accessors: &str,
    field: &str,
) -> Result<Cow<'a, Value<'v>>, FormatError> {
    let mut value = Cow::Borrowed(value);
    let mut rest = accessors;
    while !rest.is_empty() {
        if rest.starts_with('.') {
            return Err(error(format!(
                "attribute lookup in {{{field}}} is not supported"
            )));
        }
        let Some(inside) = rest.strip_prefix('[') else {
            return Err(error(format!(
                "only '.' or '[' may follow ']' in {{{field}}}"
            )));
        };
        let Some((key, after)) = inside.split_once(']') else {
            return Err(error(format!("missing ']' in {{{field}}}")));
        };
        if key.is_empty() {
            return Err(error(format!("empty index in {{{field}}}")));
        }
        rest = after;
        let Value::Str(text) = value.as_ref() else {
            let type_name = if *value == Value::None {
                "NoneType"
            } else {
                "int"
            };
            return Err(error(format!(
                "{{{field}}}: '{type_name}' object is not subscriptable"
            )));
        };
        if !key.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(format!(
                "{{{field}}}: string indices must be integers, not 'str'"
            )));
        }
        let index: usize = key
            .parse()
            .map_err(|_| error(format!("{{{field}}}: too many decimal digits in the index")))?;
        let ch = text
            .chars()
            .nth(index)
            .ok_or_else(|| error(format!("{{{field}}}: string index out of range")))?;
        value = Cow::Owned(Value::str(ch.to_string()));
    }
    Ok(value)
}

fn known_names(vars: &Vars<'_>) -> String {
    if vars.is_empty() {
        return "no placeholders".to_string();
    }
    let names: Vec<String> = vars.iter().map(|(key, _)| format!("{{{key}}}")).collect();
    names.join(", ")
}

/// Python's `repr()` of a value, or `ascii()` when `ascii_only` (non-ASCII escaped too).
fn python_repr(value: &Value<'_>, ascii_only: bool) -> String {
    let Value::Str(text) = value else {
        return value.to_string();
    };
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut repr = String::from(quote);
    for ch in text.chars() {
        match ch {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if !is_printable(c) || (ascii_only && !c.is_ascii()) => {
                repr.push_str(&escape_code(c));
            }
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

/// Python's `str.isprintable` for one character, for the characters a label or a template
/// plausibly holds: control characters, the C1 block, and the non-space separators and format
/// characters are not printable. (Unassigned code points, which Python also escapes, are not
/// known here.)
fn is_printable(ch: char) -> bool {
    let code = ch as u32;
    !matches!(code,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f
        | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x2066..=0x206f | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..)
}

/// `\xNN`, `\uNNNN` or `\UNNNNNNNN`, as Python's `repr` writes a character it escapes.
fn escape_code(ch: char) -> String {
    let code = ch as u32;
    if code < 0x100 {
        format!("\\x{code:02x}")
    } else if code < 0x10000 {
        format!("\\u{code:04x}")
    } else {
        format!("\\U{code:08x}")
    }
}

/// A parsed format spec: `[[fill]align][sign][#][0][width][grouping][.precision][type]`.
struct Spec {
    fill: char,
    align: Option<char>,
    sign: Option<char>,
    alternate: bool,
    width: usize,
    grouping: Option<char>,
    precision: Option<usize>,
    kind: Option<char>,
}

impl Spec {
    /// Parses like CPython's `parse_internal_render_format_spec`; `default_align` is `<` for
    /// strings and `>` for numbers (it decides what the `0` flag does).
    fn parse(spec: &str, default_align: char) -> Result<Spec, String> {
        let chars: Vec<char> = spec.chars().collect();
        let is_align = |c: char| matches!(c, '<' | '>' | '^' | '=');
        let mut at = 0;
        let mut fill = ' ';
        let mut fill_given = false;
        let mut align = None;
        if chars.len() >= 2 && is_align(chars[1]) {
            fill = chars[0];
            fill_given = true;
            align = Some(chars[1]);
            at = 2;
        } else if !chars.is_empty() && is_align(chars[0]) {
            align = Some(chars[0]);
            at = 1;
        }
        let mut sign = None;
        if let Some(&c @ ('+' | '-' | ' ')) = chars.get(at) {
            sign = Some(c);
            at += 1;
        }
        if chars.get(at) == Some(&'z') {
            return Err("the 'z' option is not supported".to_string());
        }
        let alternate = chars.get(at) == Some(&'#');
        if alternate {
            at += 1;
        }
        // The `0` flag: zero fill, and for numbers padding after the sign.
        if !fill_given && chars.get(at) == Some(&'0') {
            fill = '0';
            if align.is_none() && default_align == '>' {
                align = Some('=');
            }
            at += 1;
        }
        // At most MAX_WIDTH; `None` when there are no digits.
        let digits = |from: &mut usize, what: &str| -> Result<Option<usize>, String> {
            let start = *from;
            while *from < chars.len() && chars[*from].is_ascii_digit() {
                *from += 1;
            }
            if start == *from {
                return Ok(None);
            }
            let text: String = chars[start..*from].iter().collect();
            match text.parse::<usize>() {
                Ok(number) if number <= MAX_WIDTH => Ok(Some(number)),
                _ => Err(format!(
                    "the {what} {text} is above the limit of {MAX_WIDTH}"
                )),
            }
        };
        let width = digits(&mut at, "width")?.unwrap_or(0);
        let mut grouping = None;
        if let Some(&c @ (',' | '_')) = chars.get(at) {
            grouping = Some(c);
            at += 1;
        }
        let precision = if chars.get(at) == Some(&'.') {
            at += 1;
            Some(digits(&mut at, "precision")?.ok_or("Format specifier missing precision")?)
        } else {
            None
        };
        let kind = chars.get(at).copied();
        if at + usize::from(kind.is_some()) != chars.len() {
            return Err(format!("Invalid format specifier {spec:?}"));
        }
        Ok(Spec {
            fill,
            align,
            sign,
            alternate,
            width,
            grouping,
            precision,
            kind,
        })
    }

    /// Pads `body` (which starts with `leading`, the sign and base prefix) to the width.
    fn pad(&self, leading: &str, digits: &str, default_align: char) -> String {
        let length = leading.chars().count() + digits.chars().count();
        let missing = self.width.saturating_sub(length);
        let fill = |count: usize| std::iter::repeat_n(self.fill, count).collect::<String>();
        match self.align.unwrap_or(default_align) {
            '<' => format!("{leading}{digits}{}", fill(missing)),
            '^' => format!(
                "{}{leading}{digits}{}",
                fill(missing / 2),
                fill(missing - missing / 2)
            ),
            '=' => format!("{leading}{}{digits}", fill(missing)),
            _ => format!("{}{leading}{digits}", fill(missing)),
        }
    }
}

/// `format(value, spec)` as Python does it for a `str`, an `int` and `None`.
fn apply_spec(value: &Value<'_>, spec: &str) -> Result<String, String> {
    if spec.is_empty() {
        return Ok(value.to_string());
    }
    match value {
        Value::None => Err("unsupported format string passed to NoneType.__format__".to_string()),
        Value::Str(text) => format_str(text, &Spec::parse(spec, '<')?),
        Value::Int(number) => format_int(*number, &Spec::parse(spec, '>')?),
    }
}

fn format_str(text: &str, spec: &Spec) -> Result<String, String> {
    if let Some(kind) = spec.kind.filter(|&kind| kind != 's') {
        return Err(format!(
            "Unknown format code '{kind}' for object of type 'str'"
        ));
    }
    if spec.sign.is_some() {
        return Err("Sign not allowed in string format specifier".to_string());
    }
    if spec.alternate {
        return Err("Alternate form (#) not allowed in string format specifier".to_string());
    }
    if spec.align == Some('=') {
        return Err("'=' alignment not allowed in string format specifier".to_string());
    }
    if let Some(grouping) = spec.grouping {
        return Err(format!("Cannot specify '{grouping}' with 's'."));
    }
    let text: String = match spec.precision {
        Some(keep) => text.chars().take(keep).collect(),
        None => text.to_string(),
    };
    Ok(spec.pad("", &text, '<'))
}

fn format_int(number: i64, spec: &Spec) -> Result<String, String> {
    let kind = spec.kind.unwrap_or('d');
    if matches!(kind, 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%') {
        return format_float(number as f64, kind, spec);
    }
    if !matches!(kind, 'd' | 'n' | 'b' | 'o' | 'x' | 'X' | 'c') {
        return Err(format!(
            "Unknown format code '{kind}' for object of type 'int'"
        ));
    }
    if spec.precision.is_some() {
        return Err("Precision not allowed in integer format specifier".to_string());
    }
    if let Some(grouping) = spec.grouping {
        let allowed = match grouping {
            ',' => kind == 'd',
            _ => matches!(kind, 'd' | 'b' | 'o' | 'x' | 'X'),
        };
        if !allowed {
            return Err(format!("Cannot specify '{grouping}' with '{kind}'."));
        }
    }
    if kind == 'c' {
        if spec.sign.is_some() {
            return Err("Sign not allowed with integer format specifier 'c'".to_string());
        }
        if spec.alternate {
            return Err(
                "Alternate form (#) not allowed with integer format specifier 'c'".to_string(),
            );
        }
        let ch = u32::try_from(number)
            .ok()
            .and_then(char::from_u32)
            .ok_or("%c arg not in range(0x110000)")?;
        return Ok(spec.pad("", &ch.to_string(), '>'));
    }
    let magnitude = number.unsigned_abs();
    let (digits, prefix, group_size) = match kind {
        'b' => (format!("{magnitude:b}"), "0b", 4),
        'o' => (format!("{magnitude:o}"), "0o", 4),
        'x' => (format!("{magnitude:x}"), "0x", 4),
        'X' => (format!("{magnitude:X}"), "0X", 4),
        _ => (magnitude.to_string(), "", 3),
    };
    let mut leading = sign_text(number < 0, spec.sign).to_string();
    if spec.alternate {
        leading.push_str(prefix);
    }
    let digits = group_digits(&digits, spec, &leading, group_size);
    Ok(spec.pad(&leading, &digits, '>'))
}

/// The sign Python writes before a number for the spec's sign option.
fn sign_text(negative: bool, sign: Option<char>) -> &'static str {
    match (negative, sign) {
        (true, _) => "-",
        (false, Some('+')) => "+",
        (false, Some(' ')) => " ",
        _ => "",
    }
}

/// Inserts the grouping separator every `size` digits; with zero padding after the sign
/// (`0` flag or `0=` fill), the padding zeros are grouped too, as CPython does: it takes the
/// fewest digits whose grouped form fills the width (a group never starts with a separator, so
/// the result may be one character wider).
fn group_digits(digits: &str, spec: &Spec, leading: &str, size: usize) -> String {
    let Some(separator) = spec.grouping else {
        return digits.to_string();
    };
    let grouped_len = |count: usize| count + count.saturating_sub(1) / size;
    let mut count = digits.len();
    if spec.fill == '0' && spec.align == Some('=') {
        let wanted = spec.width.saturating_sub(leading.len());
        while grouped_len(count) < wanted {
            count += 1;
        }
    }
    let padded = "0".repeat(count - digits.len()) + digits;
    let mut out = String::with_capacity(grouped_len(count));
    for (at, digit) in padded.chars().enumerate() {
        if at > 0 && (count - at) % size == 0 {
            out.push(separator);
        }
        out.push(digit);
    }
    out
}

/// `format(float(number), spec)` for the float presentation types.
fn format_float(number: f64, kind: char, spec: &Spec) -> Result<String, String> {
    let precision = spec.precision.unwrap_or(6);
    let magnitude = number.abs();
    let mut body = match kind {
        'f' | 'F' => format!("{magnitude:.precision$}"),
        '%' => format!("{:.precision$}", magnitude * 100.0),
        'e' | 'E' => scientific(magnitude, precision),
        _ => {
            let significant = precision.max(1);
            let exponent: i32 = scientific(magnitude, significant - 1)
                .rsplit_once('e')
                .and_then(|(_, exponent)| exponent.parse().ok())
                .unwrap_or(0);
            let mut text = if -4 <= exponent && exponent < significant as i32 {
                let decimals = (significant as i32 - 1 - exponent).max(0) as usize;
                format!("{magnitude:.decimals$}")
            } else {
                scientific(magnitude, significant - 1)
            };
            if !spec.alternate {
                let (mantissa, exponent) = match text.find('e') {
                    Some(at) => (text[..at].to_string(), text[at..].to_string()),
                    None => (text.clone(), String::new()),
                };
                let mantissa = if mantissa.contains('.') {
                    mantissa
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                } else {
                    mantissa
                };
                text = mantissa + &exponent;
            }
            text
        }
    };
    if spec.alternate && !body.contains('.') && !matches!(kind, 'g' | 'G') {
        let at = body.find(['e', '%']).unwrap_or(body.len());
        body.insert(at, '.');
    }
    if kind == '%' {
        body.push('%');
    }
    if kind.is_ascii_uppercase() {
        body = body.to_uppercase();
    }
    let (integer, rest) = match body.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => body.split_at(at),
        None => (body.as_str(), ""),
    };
    let leading = sign_text(number < 0.0, spec.sign);
    let grouped = group_digits(integer, spec, leading, 3) + rest;
    Ok(spec.pad(leading, &grouped, '>'))
}

/// `%.{precision}e` as Python writes it: at least two exponent digits, with a sign.
fn scientific(magnitude: f64, precision: usize) -> String {
    let text = format!("{magnitude:.precision$e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, Value<'static>)> {
        vec![
            ("backend", Value::str("web_80")),
            ("port", Value::Int(31000)),
            ("hostname", Value::None),
        ]
    }

    /// Python scans left to right and raises at the first fault it meets, so a bad name
    /// before a syntax error is what is reported, and the other way round.
    #[test]
    fn a_compiled_template_reports_the_first_fault_in_text_order() {
        let cases = [
            ("{nope} }", "unknown placeholder {nope}"),
            ("{backend} }", "single '}'"),
            ("{nope} {", "unknown placeholder {nope}"),
            ("{backend} {", "without a matching '}'"),
            ("{nope}{0}", "unknown placeholder {nope}"),
            ("{backend}{0}", "positional placeholder {0}"),
            ("{backend}{port!}", "missing conversion"),
            ("{nope}{port!x}", "unknown placeholder {nope}"),
            ("{backend}{port!x}", "unknown conversion !x"),
            ("{port:z}{nope}", "{port:z}"),
            ("{backend}{a{b}}", "nested placeholder"),
        ];
        for (template, why) in cases {
            let err = format(template, &vars()).unwrap_err();
            assert!(err.0.contains(why), "{template}: {err}");
        }
    }

    /// A name is found wherever the variables hold it, whatever order an earlier fill had
    /// them in, and is unknown where they lack it.
    #[test]
    fn a_compiled_template_finds_names_in_any_order_of_the_variables() {
        let compiled = Compiled::new("{backend} {port} {hostname}");
        let mut reversed = vars();
        reversed.reverse();
        for vars in [vars(), reversed.clone(), vars(), reversed] {
            let mut out = String::new();
            compiled.fill(&vars, &mut out).unwrap();
            assert_eq!(out, "web_80 31000 None");
        }
        let mut out = String::new();
        let err = compiled.fill(&vars()[..1], &mut out).unwrap_err();
        assert!(err.0.contains("unknown placeholder {port}"), "{err}");
        assert!(compiled.fill(&[], &mut out).is_err());
    }

    #[test]
    fn a_compiled_template_appends_and_fills_again_alike() {
        let compiled = Compiled::new("{{{backend}}}:{port:>6} {hostname}}}");
        let mut out = String::from("head ");
        compiled.fill(&vars(), &mut out).unwrap();
        compiled.fill(&vars(), &mut out).unwrap();
        assert_eq!(out, "head {web_80}: 31000 None}{web_80}: 31000 None}");
        assert_eq!(compiled.text(), "{{{backend}}}:{port:>6} {hostname}}}");
        // The output limit counts this call's output only, not what `out` held before.
        let long = "x".repeat(10_000);
        let vars = [("bindOptions", Value::str(long.as_str()))];
        let mut out = "y".repeat(1_000_000);
        Compiled::new(&"{bindOptions}".repeat(8))
            .fill(&vars, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1_080_000);
    }

    #[test]
    fn substitutes_names_and_keeps_text_exact() {
        let text = "\nbackend {backend}\n  server x 1.2.3.4:{port}\n  # {hostname}\n";
        assert_eq!(
            format(text, &vars()).unwrap(),
            "\nbackend web_80\n  server x 1.2.3.4:31000\n  # None\n"
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let text = "  redirect scheme https if !{{ ssl_fc }} host_{backend}}}";
        assert_eq!(
            format(text, &vars()).unwrap(),
            "  redirect scheme https if !{ ssl_fc } host_web_80}"
        );
    }

    #[test]
    fn unknown_placeholder_names_itself_and_the_known_ones() {
        let err = format("bind {bindAdr}", &vars()).unwrap_err();
        assert!(err.0.contains("{bindAdr}"), "{err}");
        assert!(err.0.contains("{backend}"), "{err}");
    }

    #[test]
    fn stray_and_unclosed_braces_are_errors() {
        assert!(format("a } b", &vars()).is_err());
        assert!(format("a { b", &vars()).is_err());
        assert!(format("{}", &vars()).is_err());
        assert!(format("{0}", &vars()).is_err());
        assert!(format("{backend.x}", &vars()).is_err());
    }

    #[test]
    fn conversions_and_specs_follow_python() {
        assert_eq!(format("{backend!r}", &vars()).unwrap(), "'web_80'");
        assert_eq!(format("{port!s:>7}", &vars()).unwrap(), "  31000");
        assert_eq!(format("[{backend:<8}]", &vars()).unwrap(), "[web_80  ]");
        assert_eq!(format("[{backend:*^10}]", &vars()).unwrap(), "[**web_80**]");
        assert_eq!(format("[{port:8}]", &vars()).unwrap(), "[   31000]");
        assert_eq!(format("[{backend:.3}]", &vars()).unwrap(), "[web]");
        assert!(format("{hostname:5}", &vars()).is_err());
    }

    #[test]
    fn numeric_specs_follow_python() {
        let cases = [
            ("{port:08}", "00031000"),
            ("{port:08d}", "00031000"),
            ("{port:<08}", "31000000"),
            ("{port:x<8}", "31000xxx"),
            ("{port:+}", "+31000"),
            ("{port:-}", "31000"),
            ("{port: }", " 31000"),
            ("{port:=+8}", "+  31000"),
            ("{port:,}", "31,000"),
            ("{port:_}", "31_000"),
            ("{port:09,}", "0,031,000"),
            ("{port:x}", "7918"),
            ("{port:#X}", "0X7918"),
            ("{port:#b}", "0b111100100011000"),
            ("{port:_b}", "111_1001_0001_1000"),
            ("{port:#o}", "0o74430"),
            ("{port:n}", "31000"),
            ("{port:.1f}", "31000.0"),
            ("{port:.0%}", "3100000%"),
            ("{port:e}", "3.100000e+04"),
            ("{port:.2E}", "3.10E+04"),
            ("{port:g}", "31000"),
            ("{port:.2g}", "3.1e+04"),
            ("{port:10,.1f}", "  31,000.0"),
        ];
        for (template, expected) in cases {
            assert_eq!(format(template, &vars()).unwrap(), expected, "{template}");
        }
        for refused in [
            "{port:.3}",
            "{port:s}",
            "{port:,x}",
            "{port:,n}",
            "{port:+c}",
        ] {
            assert!(
                format(refused, &vars()).is_err(),
                "{refused} should be refused"
            );
        }
    }

    #[test]
    fn string_specs_follow_python() {
        assert_eq!(format("{backend:05}", &vars()).unwrap(), "web_80");
        assert_eq!(format("[{backend:08}]", &vars()).unwrap(), "[web_8000]");
        assert_eq!(format("[{backend:0>8}]", &vars()).unwrap(), "[00web_80]");
        assert_eq!(format("[{backend:>8s}]", &vars()).unwrap(), "[  web_80]");
        for refused in [
            "{backend:d}",
            "{backend:+}",
            "{backend:#}",
            "{backend:=8}",
            "{backend:,}",
        ] {
            assert!(
                format(refused, &vars()).is_err(),
                "{refused} should be refused"
            );
        }
    }

    /// Python 3's answers for `'<template>'.format(backend='web_80', port=31000,
    /// hostname=None)`, taken from the interpreter.
    #[test]
    fn index_lookups_on_strings_follow_python() {
        let cases = [
            ("{backend[0]}", "w"),
            ("{backend[5]}", "0"),
            ("{backend[01]}", "e"),
            ("{backend[0][0]}", "w"),
            ("{backend[0]:>3}", "  w"),
            ("{backend[0]!r}", "'w'"),
            ("{backend[4]!s:*^3}", "*8*"),
        ];
        for (template, expected) in cases {
            assert_eq!(format(template, &vars()).unwrap(), expected, "{template}");
        }
        // Where Python raises: a negative or signed index is a str key (TypeError), past the
        // end (IndexError), a key on an int or None (TypeError), junk after `]`, no `]`.
        let refused = [
            ("{backend[-1]}", "string indices must be integers"),
            ("{backend[+1]}", "string indices must be integers"),
            ("{backend[x]}", "string indices must be integers"),
            ("{backend[a:b]}", "string indices must be integers"),
            ("{backend[6]}", "string index out of range"),
            ("{port[0]}", "'int' object is not subscriptable"),
            ("{hostname[0]}", "'NoneType' object is not subscriptable"),
            ("{backend[0]x}", "may follow ']'"),
            ("{backend[]}", "empty index"),
            ("{backend[0}", "without a matching '}'"),
            (
                "{backend[99999999999999999999999]}",
                "too many decimal digits",
            ),
            ("{backend.upper}", "attribute lookup"),
        ];
        for (template, why) in refused {
            let err = format(template, &vars()).unwrap_err();
            assert!(err.0.contains(why), "{template}: {err}");
        }
    }

    #[test]
    fn widths_and_precisions_are_capped() {
        assert_eq!(format("{backend:>1024}", &vars()).unwrap().len(), MAX_WIDTH);
        for template in [
            "{backend:>99999999999}",
            "{backend:>1025}",
            "{backend:.1025}",
            "{port:.99999999999999999999999f}",
            "{port:0150000,}",
            "{backend:99999999999999999999999999}",
        ] {
            let err = format(template, &vars()).unwrap_err();
            assert!(
                err.0.contains("above the limit of 1024"),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn zero_padding_with_grouping_matches_python() {
        // Python: '{:04,}'.format(1) == '0,001', '{:012,}'.format(31000) == '0,000,031,000',
        // '{:=+012,}'.format(31000) == '+000,031,000'.
        let vars = [("one", Value::Int(1)), ("port", Value::Int(31000))];
        assert_eq!(format("{one:04,}", &vars).unwrap(), "0,001");
        assert_eq!(format("{port:012,}", &vars).unwrap(), "0,000,031,000");
        assert_eq!(format("{port:=+012,}", &vars).unwrap(), "+000,031,000");
        assert_eq!(format("{port:01024_b}", &vars).unwrap().len(), 1024);
    }

    #[test]
    fn printed_length_is_the_length_of_the_printed_value() {
        for value in [
            Value::Int(0),
            Value::Int(9),
            Value::Int(10),
            Value::Int(-10),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::None,
            Value::str("äb"),
            Value::Int(31000),
            Value::Int(-7),
            Value::Int(1_000_000),
        ] {
            assert_eq!(value.printed_len(), value.to_string().len(), "{value:?}");
            let mut printed = String::new();
            value.print_into(&mut printed);
            assert_eq!(printed, value.to_string(), "{value:?}");
        }
    }

    #[test]
    fn output_is_bounded_by_the_text_and_its_values() {
        let long = "x".repeat(10_000);
        let vars = [("bindOptions", Value::str(long.as_str()))];
        let template = "{bindOptions}".repeat(100);
        let err = format(&template, &vars).unwrap_err();
        assert!(err.0.contains("expands to more than"), "{err}");
        assert!(format(&"{bindOptions}".repeat(8), &vars).is_ok());
    }

    #[test]
    fn ascii_and_repr_escape_like_python() {
        let vars = [("text", Value::str("Äb\u{a0}c'"))];
        assert_eq!(format("{text!r}", &vars).unwrap(), "\"Äb\\xa0c'\"");
        assert_eq!(format("{text!a}", &vars).unwrap(), "\"\\xc4b\\xa0c'\"");
        let vars = [("text", Value::str("\u{2028}😀"))];
        assert_eq!(format("{text!a}", &vars).unwrap(), "'\\u2028\\U0001f600'");
    }
}
