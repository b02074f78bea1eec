//! marathon-lb's `{placeholder}` templates: Python's `str.format` with keyword arguments only,
//! reproduced so that a marathon-lb template (label, environment variable or bare file) renders
//! byte for byte as it did there. Pure string work; knows nothing of HAProxy.
//!
//! Supported: `{name}`, `{{` / `}}` escapes, the conversions `!s` / `!r`, and the common format
//! specs (`[[fill]align][width][.precision]` plus the `s` / `d` types). Anything marathon-lb
//! would have raised on (an unknown key, a positional `{}` / `{0}`, a stray `}`, an attribute or
//! index lookup) is an error naming the placeholder.

use std::fmt;

/// One keyword argument's value, typed as marathon-lb passed it (a Python `str`, `int` or
/// `None`), since the type decides how it prints and which format specs apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    /// Python's `None`, printed `None`.
    None,
}

impl Value {
    pub fn str(text: impl Into<String>) -> Value {
        Value::Str(text.into())
    }

    /// `Some(text)` → the text, `None` → Python's `None`.
    pub fn opt_str(text: Option<&str>) -> Value {
        text.map_or(Value::None, Value::str)
    }

    pub fn opt_int(number: Option<i64>) -> Value {
        number.map_or(Value::None, Value::Int)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(text) => f.write_str(text),
            Value::Int(number) => write!(f, "{number}"),
            Value::None => f.write_str("None"),
        }
    }
}

/// The keyword arguments of one `.format(...)` call, in the order marathon-lb passes them.
pub type Vars = [(&'static str, Value)];

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

/// `template.format(**vars)` as Python does it.
pub fn format(template: &str, vars: &Vars) -> Result<String, FormatError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut chars = template.char_indices().peekable();
    while let Some((at, ch)) = chars.next() {
        match ch {
            '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let start = at + 1;
                let end = loop {
                    match chars.next() {
                        Some((close, '}')) => break close,
                        Some((_, '{')) => {
                            return Err(error(format!(
                                "nested placeholder in {:?} is not supported",
                                &template[at..]
                            )))
                        }
                        Some(_) => {}
                        None => {
                            return Err(error(
                                "'{' without a matching '}' (write '{{' for a literal brace)",
                            ))
                        }
                    }
                };
                replace_field(&template[start..end], vars, &mut out)?;
            }
            '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '}' => {
                return Err(error(
                    "single '}' encountered (write '}}' for a literal brace)",
                ))
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// One `{field!conversion:spec}`.
fn replace_field(field: &str, vars: &Vars, out: &mut String) -> Result<(), FormatError> {
    let (name_and_conversion, spec) = match field.split_once(':') {
        Some((head, spec)) => (head, spec),
        None => (field, ""),
    };
    let (name, conversion) = match name_and_conversion.split_once('!') {
        Some((name, conversion)) => (name, Some(conversion)),
        None => (name_and_conversion, None),
    };
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(format!(
            "positional placeholder {{{field}}} is not supported; use a name such as {{backend}}"
        )));
    }
    if name.contains(['.', '[']) {
        return Err(error(format!(
            "attribute or index lookup in {{{field}}} is not supported"
        )));
    }
    let Some((_, value)) = vars.iter().find(|(key, _)| *key == name) else {
        return Err(error(format!(
            "unknown placeholder {{{name}}}; this template knows {}",
            known_names(vars)
        )));
    };
    let converted;
    let value = match conversion {
        None => value,
        Some("s") => {
            converted = Value::Str(value.to_string());
            &converted
        }
        Some("r") => {
            converted = Value::Str(python_repr(value));
            &converted
        }
        Some(other) => return Err(error(format!("unknown conversion !{other} in {{{field}}}"))),
    };
    out.push_str(&apply_spec(value, spec).map_err(|why| error(format!("{{{field}}}: {why}")))?);
    Ok(())
}

fn known_names(vars: &Vars) -> String {
    if vars.is_empty() {
        return "no placeholders".to_string();
    }
    let names: Vec<String> = vars.iter().map(|(key, _)| format!("{{{key}}}")).collect();
    names.join(", ")
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::Str(text) => {
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
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        repr.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => repr.push(c),
                }
            }
            repr.push(quote);
            repr
        }
        other => other.to_string(),
    }
}

/// `format(value, spec)` for the spec subset `[[fill]align][width][.precision][type]`.
fn apply_spec(value: &Value, spec: &str) -> Result<String, String> {
    if spec.is_empty() {
        return Ok(value.to_string());
    }
    let chars: Vec<char> = spec.chars().collect();
    let mut at = 0;
    let is_align = |c: char| matches!(c, '<' | '>' | '^' | '=');
    let (fill, align) = if chars.len() >= 2 && is_align(chars[1]) {
        at = 2;
        (chars[0], Some(chars[1]))
    } else if is_align(chars[0]) {
        at = 1;
        (' ', Some(chars[0]))
    } else {
        (' ', None)
    };
    let digits = |from: &mut usize| -> Option<usize> {
        let start = *from;
        while *from < chars.len() && chars[*from].is_ascii_digit() {
            *from += 1;
        }
        (start < *from).then(|| chars[start..*from].iter().collect::<String>().parse().ok())?
    };
    let width = digits(&mut at).unwrap_or(0);
    let precision = if at < chars.len() && chars[at] == '.' {
        at += 1;
        Some(digits(&mut at).ok_or("precision expected after '.'")?)
    } else {
        None
    };
    let kind = chars.get(at).copied();
    if at + usize::from(kind.is_some()) != chars.len() {
        return Err(format!("unsupported format spec {spec:?}"));
    }
    let (text, default_align) = match (value, kind) {
        (Value::Str(text), None | Some('s')) => {
            let text = match precision {
                Some(keep) => text.chars().take(keep).collect(),
                None => text.clone(),
            };
            (text, '<')
        }
        (Value::Int(number), None | Some('d')) if precision.is_none() => (number.to_string(), '>'),
        (Value::None, _) => return Err("None takes no format spec".to_string()),
        _ => return Err(format!("unsupported format spec {spec:?} for this value")),
    };
    let pad = width.saturating_sub(text.chars().count());
    let fill_str = |count: usize| std::iter::repeat(fill).take(count).collect::<String>();
    Ok(match align.unwrap_or(default_align) {
        '<' => text + &fill_str(pad),
        '^' => fill_str(pad / 2) + &text + &fill_str(pad - pad / 2),
        _ => fill_str(pad) + &text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, Value)> {
        vec![
            ("backend", Value::str("web_80")),
            ("port", Value::Int(31000)),
            ("hostname", Value::None),
        ]
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
}
