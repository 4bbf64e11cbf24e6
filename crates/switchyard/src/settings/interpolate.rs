//! `${NAME}` from the environment and `${file:PATH}` from mounted files, in every string.

use super::*;

/// Replaces `${NAME}` in every string with the variable's value and `${file:PATH}` with the
/// file's content. A malformed reference is a problem; an unset name or unreadable file goes
/// to `unset` (it is a problem only where the value is needed) and leaves an empty string.
fn interpolate(
    v: Value,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(&s, path, lookup, problems, unset)),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, x)| interpolate(x, &format!("{path}[{i}]"), lookup, problems, unset))
                .collect(),
        ),
        Value::Object(o) => Value::Object(interpolate_map(o, path, lookup, problems, unset)),
        other => other,
    }
}

pub(super) fn interpolate_map(
    o: Map<String, Value>,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> Map<String, Value> {
    o.into_iter()
        .map(|(k, x)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            (k, interpolate(x, &p, lookup, problems, unset))
        })
        .collect()
}

fn substitute(
    s: &str,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push(Problem::new(path, "unclosed ${ in value"));
            return s.to_string();
        };
        let name = &after[..end];
        let value = match name.strip_prefix("file:") {
            Some(file) => read_secret_file(file),
            None => lookup(name).ok_or_else(|| format!("environment variable {name} is not set")),
        };
        match value {
            Ok(value) => out.push_str(&value),
            Err(message) => unset.push(Problem::new(path, &message)),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A mounted secret's content without the one trailing newline that `echo` and most editors
/// leave, which no token or password means. The error names the file, never its content.
fn read_secret_file(path: &str) -> Result<String, String> {
    let mut text =
        std::fs::read_to_string(path).map_err(|e| format!("file {path} cannot be read: {e}"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}
