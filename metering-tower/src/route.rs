//! Route templates, and how a request's path meets them.
//!
//! Route settings ([`premium_route`](crate::MeteringLayerBuilder::premium_route),
//! [`route_cost`](crate::MeteringLayerBuilder::route_cost)) are found by matching the
//! request's path against each template, segment by segment, after the path is
//! normalized ([`segments`]): percent-escapes decoded, empty and `.` segments dropped,
//! `..` resolved. A `{name}` segment matches any one segment and a final `{*name}` the
//! rest, so every spelling a router could take for a route (`/notes/%31/summary`,
//! `/notes/+1/summary`, `/notes//1/summary/`) meets that route's settings: access control
//! never depends on how the path was written. When several templates match, the most
//! specific wins, as in axum: a literal segment before a parameter, a parameter before a
//! catch-all, from the left.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

/// One segment of a route template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches this text exactly (after decoding).
    Literal(Box<str>),
    /// `{name}`: any one segment.
    Param,
    /// `{*name}`, last: one or more segments.
    Rest,
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param => 1,
            Segment::Rest => 2,
        }
    }
}

/// A parsed route template such as `/notes/{id}/summary`.
#[derive(Debug, Clone)]
struct Template {
    text: Box<str>,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    fn parse(text: &str) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err("a route template is a path: it starts with `/`".into());
        }
        let parts: Vec<&str> = text.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(format!("`{{{name}}}` matches the rest of the path: it can only be last"));
                    }
                    check_name(&name[1..], part)?;
                    Segment::Rest
                }
                Some(name) => {
                    check_name(name, part)?;
                    Segment::Param
                }
                None if part.contains(['{', '}']) => {
                    return Err(format!("`{part}`: a parameter takes a whole segment, as in `{{id}}`"));
                }
                None if part.starts_with(':') || part.starts_with('*') => {
                    return Err(format!("`{part}` is an older router syntax; write `{{{}}}`", part.replace(':', "")));
                }
                None if *part == ".." => return Err("`..` cannot be part of a route template".into()),
                None => Segment::Literal(decode(part).into()),
            };
            segments.push(segment);
        }
        Ok(Template { text: text.into(), segments })
    }

    /// Whether the normalized path `path` is one this template matches.
    fn matches(&self, path: &[Cow<'_, str>]) -> bool {
        let mut path = path.iter();
        for segment in &self.segments {
            match segment {
                Segment::Rest => return path.next().is_some(),
                Segment::Param => {
                    if path.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(text) => {
                    if path.next().is_none_or(|s| s.as_ref() != text.as_ref()) {
                        return false;
                    }
                }
            }
        }
        path.next().is_none()
    }

    /// The order in which templates are tried: the most specific first.
    fn specificity(&self, other: &Template) -> Ordering {
        let ranks = |t: &Template| t.segments.iter().map(Segment::rank).collect::<Vec<_>>();
        ranks(self).cmp(&ranks(other)).then_with(|| other.segments.len().cmp(&self.segments.len()))
    }

    /// Whether both templates match exactly the same paths.
    fn same_shape(&self, other: &Template) -> bool {
        self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                _ => a.rank() == b.rank(),
            })
    }
}

fn check_name(name: &str, part: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['{', '}', '*']) {
        return Err(format!("`{part}`: a parameter is `{{name}}` or, last, `{{*name}}`"));
    }
    Ok(())
}

/// Route templates with their settings, tried most specific first.
#[derive(Debug)]
pub(crate) struct Routes<R> {
    ordered: Vec<(Template, R)>,
    by_text: HashMap<Box<str>, usize>,
}

impl<R> Default for Routes<R> {
    fn default() -> Self {
        Routes { ordered: Vec::new(), by_text: HashMap::new() }
    }
}

impl<R> Routes<R> {
    /// Parses every template; refuses a malformed one, and two that match the same paths.
    pub(crate) fn new(routes: impl IntoIterator<Item = (String, R)>) -> Result<Self, (String, String)> {
        let mut ordered: Vec<(Template, R)> = Vec::new();
        for (text, settings) in routes {
            let template = Template::parse(&text).map_err(|e| (text.clone(), e))?;
            if let Some((twin, _)) = ordered.iter().find(|(t, _)| t.same_shape(&template)) {
                return Err((text, format!("it matches the same paths as `{}`", twin.text)));
            }
            ordered.push((template, settings));
        }
        ordered.sort_by(|a, b| a.0.specificity(&b.0));
        let by_text = ordered.iter().enumerate().map(|(i, (t, _))| (t.text.clone(), i)).collect();
        Ok(Routes { ordered, by_text })
    }

    /// How many templates there are.
    pub(crate) fn len(&self) -> usize {
        self.ordered.len()
    }

    /// The template and settings for a request: `template` when the router reported one
    /// that is configured, else the most specific template matching `path`.
    pub(crate) fn find(&self, path: &str, template: Option<&str>) -> Option<(&str, &R)> {
        if self.ordered.is_empty() {
            return None;
        }
        let found = match template.and_then(|t| self.by_text.get(t)) {
            Some(&i) => &self.ordered[i],
            None => {
                let path = segments(path);
                self.ordered.iter().find(|(t, _)| t.matches(&path))?
            }
        };
        Some((&found.0.text, &found.1))
    }
}

/// The path's segments, normalized: percent-escapes decoded (invalid UTF-8 replaced),
/// empty and `.` segments dropped, `..` taking back the segment before it.
pub(crate) fn segments(path: &str) -> Vec<Cow<'_, str>> {
    let mut out = Vec::new();
    for raw in path.split('/') {
        let segment = decode(raw);
        match segment.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(segment),
        }
    }
    out
}

/// A segment with its percent-escapes decoded; an escape that is not two hex digits is
/// kept as written.
fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' => bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit)).map(hex_pair),
            _ => None,
        };
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The byte two hex digits spell.
fn hex_pair(digits: &[u8]) -> u8 {
    let value = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    value(digits[0]) * 16 + value(digits[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(templates: &[&str]) -> Routes<usize> {
        Routes::new(templates.iter().enumerate().map(|(i, t)| (t.to_string(), i))).unwrap()
    }

    #[test]
    fn every_spelling_of_a_path_meets_its_template() {
        let r = routes(&["/notes/{id}/summary", "/notes/{id}"]);
        for path in [
            "/notes/1/summary",
            "/notes/%31/summary",
            "/notes/+1/summary",
            "/notes/abc/summary",
            "/notes//1/summary/",
            "/notes/1/./summary",
            "/notes/2/../1/summary",
            "/notes/1/%73ummary",
            "/%6Eotes/1/summary",
        ] {
            assert_eq!(r.find(path, None).map(|(t, _)| t), Some("/notes/{id}/summary"), "{path}");
        }
        assert_eq!(r.find("/notes/1", None).map(|(t, _)| t), Some("/notes/{id}"));
        assert_eq!(r.find("/notes/1%2Fsummary", None).map(|(t, _)| t), Some("/notes/{id}"), "one segment");
        assert_eq!(r.find("/notes", None), None);
        assert_eq!(r.find("/notes/1/summary/more", None), None);
    }

    #[test]
    fn the_most_specific_template_wins() {
        let r = routes(&["/files/{*rest}", "/notes/{id}", "/notes/recent", "/{any}/recent"]);
        assert_eq!(r.find("/notes/recent", None).map(|(t, _)| t), Some("/notes/recent"));
        assert_eq!(r.find("/notes/7", None).map(|(t, _)| t), Some("/notes/{id}"));
        assert_eq!(r.find("/tags/recent", None).map(|(t, _)| t), Some("/{any}/recent"));
        assert_eq!(r.find("/files/a/b/c", None).map(|(t, _)| t), Some("/files/{*rest}"));
        assert_eq!(r.find("/files", None), None, "a catch-all needs one segment at least");
    }

    #[test]
    fn a_template_the_router_reports_is_taken_as_is() {
        let r = routes(&["/notes/{id}", "/notes/recent"]);
        assert_eq!(r.find("/notes/recent", Some("/notes/{id}")).map(|(t, _)| t), Some("/notes/{id}"));
        assert_eq!(r.find("/notes/recent", Some("/unknown")).map(|(t, _)| t), Some("/notes/recent"));
    }

    #[test]
    fn templates_that_cannot_match_as_written_are_refused() {
        for bad in ["notes/{id}", "/notes/:id", "/files/*rest", "/notes/{id}.json", "/{*rest}/x", "/a/{}", "/a/../b"] {
            assert!(Routes::new([(bad.to_owned(), ())]).is_err(), "{bad}");
        }
        let twins = Routes::new([("/a/{x}".to_owned(), ()), ("/a/{y}/".to_owned(), ())]);
        assert!(twins.unwrap_err().1.contains("/a/{x}"));
    }

    #[test]
    fn decoding_keeps_what_is_not_an_escape() {
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode("%ff"), "\u{fffd}");
        assert_eq!(segments("/a/%2e%2e/b"), vec!["b"]);
    }
}
