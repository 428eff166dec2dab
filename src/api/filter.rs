//! `?filter=`: Consul's boolean filter expressions (go-bexpr's language)
//! over the JSON a list endpoint answers with.
//!
//! ```text
//! expr     := or
//! or       := and ("or" and)*
//! and      := unary ("and" unary)*
//! unary    := "not" unary | "(" or ")" | match
//! match    := selector ("==" | "!=") value
//!           | selector "is" ["not"] "empty"
//!           | value ["not"] "in" selector
//!           | selector ["not"] ("contains" | "matches") value
//! selector := name ("." name | "[" string "]")*
//! value    := "double-quoted" | `raw` | bare word (number, true, ...)
//! ```
//!
//! A selector walks the item's JSON fields (`Service.Tags`,
//! `Node.Meta.env`, `ServiceMeta["team"]`); a field that is not there is
//! empty and equal to nothing. `in`/`contains` look in lists (an element
//! equal to the value), maps (a key) and strings (a substring).

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// It does not hold.
    Not(Box<Filter>),
    /// A comparison.
    Match(Match),
}

/// One comparison of a field with a value.
#[derive(Debug, Clone)]
pub struct Match {
    selector: Vec<String>,
    op: Op,
    value: String,
    regex: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Equal,
    NotEqual,
    Empty,
    NotEmpty,
    In,
    NotIn,
    Matches,
    NotMatches,
}

/// Most nesting of parentheses and `not`s (deeper input is refused rather
/// than allowed to exhaust the stack).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(&'static str),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Dot,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '[' => {
                out.push(Tok::OpenBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::CloseBracket);
                i += 1
            }
            '.' => {
                out.push(Tok::Dot);
                i += 1
            }
            '=' | '!' => {
                if chars.get(i + 1) != Some(&'=') {
                    return Err(format!("expected \"{c}=\" at offset {i}"));
                }
                out.push(Tok::Op(if c == '=' { "==" } else { "!=" }));
                i += 2;
            }
            '"' | '`' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some('\\') if c == '"' => {
                            let next = chars.get(i + 1).ok_or("unterminated string")?;
                            text.push(match next {
                                'n' => '\n',
                                't' => '\t',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Quoted(text));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"()[].=!\"`".contains(chars[i])
                {
                    i += 1;
                }
                if start == i {
                    return Err(format!("unexpected {c:?} at offset {i}"));
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect_word(&mut self, w: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Word(x)) if x == w => Ok(()),
            other => Err(format!(
                "expected {w:?}, found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested more than {MAX_DEPTH} deep"));
        }
        let f = if self.peek_word("not") {
            self.pos += 1;
            Filter::Not(Box::new(self.unary()?))
        } else if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            match self.next() {
                Some(Tok::Close) => inner,
                other => {
                    return Err(format!(
                        "expected \")\", found {}",
                        describe(other.as_ref())
                    ))
                }
            }
        } else {
            Filter::Match(self.comparison()?)
        };
        self.depth -= 1;
        Ok(f)
    }

    fn comparison(&mut self) -> Result<Match, String> {
        // `value [not] in selector` starts with a value; a quoted first
        // token, or a word followed by `in`/`not in`, is that form.
        let word_at = |i: usize, w: &str| matches!(self.toks.get(i), Some(Tok::Word(x)) if x == w);
        let value_first = match self.peek() {
            Some(Tok::Quoted(_)) => true,
            Some(Tok::Word(_)) => {
                word_at(self.pos + 1, "in")
                    || (word_at(self.pos + 1, "not") && word_at(self.pos + 2, "in"))
            }
            _ => false,
        };
        if value_first {
            let value = self.value()?;
            let negate = self.peek_word("not");
            if negate {
                self.pos += 1;
            }
            self.expect_word("in")?;
            let selector = self.selector()?;
            let op = if negate { Op::NotIn } else { Op::In };
            return Ok(Match {
                selector,
                op,
                value,
                regex: None,
            });
        }
        let selector = self.selector()?;
        let (op, needs_value) = match self.next() {
            Some(Tok::Op("==")) => (Op::Equal, true),
            Some(Tok::Op("!=")) => (Op::NotEqual, true),
            Some(Tok::Word(w)) if w == "is" => {
                let negate = self.peek_word("not");
                if negate {
                    self.pos += 1;
                }
                self.expect_word("empty")?;
                (if negate { Op::NotEmpty } else { Op::Empty }, false)
            }
            Some(Tok::Word(w)) if w == "contains" => (Op::In, true),
            Some(Tok::Word(w)) if w == "matches" => (Op::Matches, true),
            Some(Tok::Word(w)) if w == "not" => match self.next() {
                Some(Tok::Word(w)) if w == "contains" => (Op::NotIn, true),
                Some(Tok::Word(w)) if w == "matches" => (Op::NotMatches, true),
                other => {
                    return Err(format!(
                        "expected \"contains\" or \"matches\" after \"not\", found {}",
                        describe(other.as_ref())
                    ))
                }
            },
            other => {
                return Err(format!(
                    "expected an operator (==, !=, is empty, contains, matches) after {}, found {}",
                    selector.join("."),
                    describe(other.as_ref())
                ))
            }
        };
        let value = if needs_value {
            self.value()?
        } else {
            String::new()
        };
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                regex::Regex::new(&value)
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Match {
            selector,
            op,
            value,
            regex,
        })
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        let mut parts = match self.next() {
            Some(Tok::Word(w)) if !is_keyword(&w) => vec![w],
            other => {
                return Err(format!(
                    "expected a selector, found {}",
                    describe(other.as_ref())
                ))
            }
        };
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Word(w)) => parts.push(w),
                        other => {
                            return Err(format!(
                                "expected a field name after \".\", found {}",
                                describe(other.as_ref())
                            ))
                        }
                    }
                }
                Some(Tok::OpenBracket) => {
                    self.pos += 1;
                    let key = match self.next() {
                        Some(Tok::Quoted(k)) | Some(Tok::Word(k)) => k,
                        other => {
                            return Err(format!(
                                "expected a key inside [], found {}",
                                describe(other.as_ref())
                            ))
                        }
                    };
                    if self.next() != Some(Tok::CloseBracket) {
                        return Err("expected \"]\"".into());
                    }
                    parts.push(key);
                }
                _ => return Ok(parts),
            }
        }
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Quoted(v)) => Ok(v),
            Some(Tok::Word(w)) if !is_keyword(&w) => Ok(w),
            other => Err(format!(
                "expected a value, found {}",
                describe(other.as_ref())
            )),
        }
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "and" | "or" | "not" | "in" | "is" | "empty" | "contains" | "matches"
    )
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Word(w)) => format!("{w:?}"),
        Some(Tok::Quoted(q)) => format!("\"{q}\""),
        Some(Tok::Op(o)) => format!("{o:?}"),
        Some(Tok::Open) => "\"(\"".into(),
        Some(Tok::Close) => "\")\"".into(),
        Some(Tok::OpenBracket) => "\"[\"".into(),
        Some(Tok::CloseBracket) => "\"]\"".into(),
        Some(Tok::Dot) => "\".\"".into(),
    }
}

impl Filter {
    /// Parses a filter expression; the error says what is wrong and where.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let toks = tokenize(s)?;
        if toks.is_empty() {
            return Err("empty filter expression".into());
        }
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        let f = p.or()?;
        if p.pos < p.toks.len() {
            return Err(format!(
                "unexpected {} after a complete expression",
                describe(p.peek())
            ));
        }
        Ok(f)
    }

    /// Whether `item` passes.
    pub fn matches(&self, item: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(item) && b.matches(item),
            Filter::Or(a, b) => a.matches(item) || b.matches(item),
            Filter::Not(f) => !f.matches(item),
            Filter::Match(m) => m.matches(item),
        }
    }
}

/// A scalar as the filter language compares it.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

impl Match {
    fn field<'v>(&self, item: &'v Value) -> Option<&'v Value> {
        self.selector
            .iter()
            .try_fold(item, |v, part| v.as_object()?.get(part))
    }

    fn matches(&self, item: &Value) -> bool {
        let field = self.field(item);
        let equal = || field.and_then(scalar).is_some_and(|s| s == self.value);
        let contains = || match field {
            Some(Value::Array(items)) => items
                .iter()
                .any(|i| scalar(i).is_some_and(|s| s == self.value)),
            Some(Value::Object(map)) => map.contains_key(&self.value),
            Some(Value::String(s)) => s.contains(&self.value),
            _ => false,
        };
        let regex_matches = || {
            field
                .and_then(scalar)
                .zip(self.regex.as_ref())
                .is_some_and(|(s, re)| re.is_match(&s))
        };
        match self.op {
            Op::Equal => equal(),
            Op::NotEqual => !equal(),
            Op::Empty => is_empty(field),
            Op::NotEmpty => !is_empty(field),
            Op::In => contains(),
            Op::NotIn => !contains(),
            Op::Matches => regex_matches(),
            Op::NotMatches => !regex_matches(),
        }
    }
}

/// Applies `filter` to a list answer: the elements of an array, the values
/// of a map of objects (`/v1/agent/services`), or the `Services` of a
/// node's listing.
pub fn apply(filter: &Filter, body: &mut Value) {
    match body {
        Value::Array(items) => items.retain(|i| filter.matches(i)),
        Value::Object(map) => {
            // A node with its services (catalog/node, node-services): the
            // filter picks services, as a list or as a map by ID.
            match map.get_mut("Services") {
                Some(Value::Array(services)) => services.retain(|i| filter.matches(i)),
                Some(Value::Object(services)) => services.retain(|_, v| filter.matches(v)),
                _ => map.retain(|_, v| filter.matches(v)),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn item() -> Value {
        json!({
            "Node": "web-1",
            "ServicePort": 8080,
            "ServiceTags": ["v1", "primary"],
            "ServiceMeta": {"team": "payments", "env": "prod"},
            "Service": {"Service": "web", "Tags": ["v1"], "Connect": {}},
            "Checks": [],
            "Enabled": true,
        })
    }

    fn holds(expr: &str) -> bool {
        Filter::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(&item())
    }

    #[test]
    fn consul_filter_expressions_evaluate() {
        for (expr, want) in [
            ("Node == web-1", true),
            ("Node == \"web-1\"", true),
            ("Node != `web-1`", false),
            ("ServicePort == 8080", true),
            ("Enabled == true", true),
            ("v1 in ServiceTags", true),
            ("\"canary\" not in ServiceTags", true),
            ("ServiceTags contains primary", true),
            ("ServiceTags not contains primary", false),
            ("ServiceMeta.team == payments", true),
            ("ServiceMeta[\"env\"] == prod", true),
            ("team in ServiceMeta", true),
            ("Service.Service == web and Service.Tags contains v1", true),
            ("Service.Service == db or ServicePort == 8080", true),
            ("not (Service.Service == db)", true),
            ("Checks is empty", true),
            ("Service.Connect is empty", true),
            ("Missing.Field is empty", true),
            ("Missing == x", false),
            ("ServiceTags is not empty", true),
            ("Node matches \"^web-[0-9]+$\"", true),
            ("Node not matches \"^db\"", true),
            ("Node contains eb", true),
            (
                "(Node == a or Node == web-1) and not ServicePort == 1",
                true,
            ),
        ] {
            assert_eq!(holds(expr), want, "{expr}");
        }
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("", "empty"),
            ("Node ==", "expected a value"),
            ("Node = web", "\"==\""),
            ("Node == web extra", "after a complete expression"),
            ("(Node == web", "\")\""),
            ("Node matches \"(\"", "regular expression"),
            ("Node is full", "\"empty\""),
            ("Node ~ x", "operator"),
            ("\"unterminated", "unterminated"),
            ("and == x", "selector"),
        ] {
            let e = Filter::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
        let deep = format!("{}Node == x{}", "(".repeat(200), ")".repeat(200));
        assert!(Filter::parse(&deep).unwrap_err().contains("nested"));
    }

    #[test]
    fn lists_and_maps_are_filtered() {
        let f = Filter::parse("Service == web").unwrap();
        let mut list = json!([{"Service": "web"}, {"Service": "db"}]);
        apply(&f, &mut list);
        assert_eq!(list, json!([{"Service": "web"}]));
        let mut map = json!({"a": {"Service": "web"}, "b": {"Service": "db"}});
        apply(&f, &mut map);
        assert_eq!(map, json!({"a": {"Service": "web"}}));
        let mut node = json!({"Node": {"Node": "n"}, "Services": [{"Service": "db"}]});
        apply(&f, &mut node);
        assert_eq!(node["Services"], json!([]));
    }

    proptest! {
        /// Any input parses or is refused; nothing panics.
        #[test]
        fn arbitrary_input_never_panics(s in "[ a-zA-Z0-9=!\"`()\\[\\].\\\\]{0,60}") {
            if let Ok(f) = Filter::parse(&s) {
                f.matches(&item());
            }
        }
    }
}
