//! The Apigee `filter` language (docs/apigee.md): a tokenizer, a recursive-descent parser into a
//! syntax tree, a printer, and the translation of a tree into an SQL condition.
//!
//! The grammar (docs/apigee.md has it with examples):
//!
//! ```text
//! filter    := or EOF
//! or        := and ("or" and)*
//! and       := primary ("and" primary)*
//! primary   := "(" or ")" | condition
//! condition := FIELD ("eq" | "ne" | "gt" | "lt" | "ge" | "le") value
//!            | FIELD ("in" | "notin") list
//!            | FIELD ["not"] "like" STRING
//!            | FIELD ["not"] "similar" "to" STRING
//!            | FIELD ("is" "null" | "isnot" "null" | "is" "not" "null")
//! list      := "(" value ("," value)* ")" | value ("," value)*
//! value     := STRING | NUMBER
//! ```
//!
//! Keywords are case-insensitive; field names are exact. Every field is looked up in a fixed
//! list of [`Column`]s while parsing, so a tree only ever names whitelisted SQL expressions, and
//! every literal becomes a bound parameter. Errors carry the 1-based character position where
//! parsing failed.

use std::fmt;

use crate::store::functions::compile_regex;
use rusqlite::types::Value;

/// Longest filter accepted, in characters.
pub const MAX_CHARS: usize = 65_536;
/// Deepest nesting of parentheses accepted; the parser recurses once per level.
pub const MAX_DEPTH: usize = 100;
/// Most conditions in one filter (each becomes one SQL term; SQLite caps expression depth).
pub const MAX_CONDITIONS: usize = 200;
/// Most literal values in one filter (each becomes one bound parameter).
pub const MAX_VALUES: usize = 1_000;
/// Longest string literal, in characters (SQLite caps LIKE patterns; regexes are compiled).
pub const MAX_STRING: usize = 1_024;

/// Whether a field holds text (a dimension) or a number (a metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
}

/// A field a filter may name, and the fixed SQL expression it stands for.
#[derive(Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub sql: &'static str,
    pub kind: Kind,
}

/// A filter's syntax tree. `And` and `Or` hold at least two children and never a child of
/// their own kind (the constructors flatten), so one filter has one tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Cond(Cond),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub field: &'static Column,
    pub test: Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl CmpOp {
    fn word(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Lt => "lt",
            CmpOp::Ge => "ge",
            CmpOp::Le => "le",
        }
    }
}

/// What a condition tests; the `bool`s say "negated" (`notin`, `not like`, …, `isnot null`).
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Cmp(CmpOp, Lit),
    In(bool, Vec<Lit>),
    Like(bool, String),
    Similar(bool, String),
    Null(bool),
}

/// A literal: a string, or a number kept as written (it parses as a finite f64).
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Num(String),
}

impl Expr {
    /// Joins terms with `and`, flattening nested `and`s; one term is itself.
    pub fn and(terms: Vec<Expr>) -> Expr {
        Expr::join(terms, true)
    }

    /// Joins terms with `or`, flattening nested `or`s; one term is itself.
    pub fn or(terms: Vec<Expr>) -> Expr {
        Expr::join(terms, false)
    }

    fn join(terms: Vec<Expr>, and: bool) -> Expr {
        let mut flat = Vec::with_capacity(terms.len());
        for t in terms {
            match t {
                Expr::And(inner) if and => flat.extend(inner),
                Expr::Or(inner) if !and => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            return flat.pop().expect("one term");
        }
        if and {
            Expr::And(flat)
        } else {
            Expr::Or(flat)
        }
    }
}

/// Where and why a filter was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character position of the offending character (one past the end for "ended early").
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter: at character {}: {}", self.pos, self.msg)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Word(String),
    Str(String),
    Num(String),
    End,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    /// 1-based character position of the token's first character.
    pos: usize,
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        pos,
        msg: msg.into(),
    })
}

/// Splits a filter into tokens. Words are letters, digits, `_` and `.` starting with a letter or
/// `_`; numbers are `-?digits[.digits][e[+-]digits]`; strings are single-quoted with `''`.
fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | ',' => {
                let tok = match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                };
                out.push(Token { tok, pos });
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                let mut count = 0;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return err(pos, "unterminated string (a quote is written '')"),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                    count += 1;
                    if count > MAX_STRING {
                        return err(pos, format!("string longer than {MAX_STRING} characters"));
                    }
                }
                out.push(Token {
                    tok: Tok::Str(s),
                    pos,
                });
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                if c == '-' {
                    i += 1;
                }
                let digits = |i: &mut usize| {
                    let from = *i;
                    while chars.get(*i).is_some_and(char::is_ascii_digit) {
                        *i += 1;
                    }
                    *i > from
                };
                if !digits(&mut i) {
                    return err(pos, "expected a digit after '-'");
                }
                if chars.get(i) == Some(&'.') {
                    i += 1;
                    if !digits(&mut i) {
                        return err(i + 1, "expected a digit after the decimal point");
                    }
                }
                if matches!(chars.get(i), Some('e' | 'E')) {
                    i += 1;
                    if matches!(chars.get(i), Some('+' | '-')) {
                        i += 1;
                    }
                    if !digits(&mut i) {
                        return err(i + 1, "expected a digit in the exponent");
                    }
                }
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                {
                    return err(i + 1, "unexpected character in a number");
                }
                let text: String = chars[start..i].iter().collect();
                if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                    return err(pos, "number out of range");
                }
                out.push(Token {
                    tok: Tok::Num(text),
                    pos,
                });
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    pos,
                });
            }
            other => {
                return err(
                    pos,
                    format!(
                        "unexpected character {:?}",
                        other.escape_default().to_string()
                    ),
                )
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
    });
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Token>,
    at: usize,
    columns: &'a [&'static Column],
    conditions: usize,
    values: usize,
}

/// Parses a filter, checking every field against `columns` and every literal's type.
pub fn parse(input: &str, columns: &[&'static Column]) -> Result<Expr, ParseError> {
    let len = input.chars().count();
    if len > MAX_CHARS {
        return err(
            MAX_CHARS + 1,
            format!("the filter is {len} characters long; at most {MAX_CHARS} are accepted"),
        );
    }
    let mut p = Parser {
        toks: tokenize(input)?,
        at: 0,
        columns,
        conditions: 0,
        values: 0,
    };
    let e = p.or(0)?;
    match p.peek() {
        Tok::End => Ok(e),
        Tok::RParen => err(p.pos(), "unbalanced ')'"),
        _ => err(p.pos(), "expected 'and', 'or' or the end of the filter"),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.at].pos
    }

    fn next(&mut self) -> &Token {
        let t = &self.toks[self.at];
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    /// Whether the next token is the keyword `kw` (ignoring case).
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.is_kw(kw) {
            self.next();
            Ok(())
        } else {
            err(self.pos(), format!("expected '{kw}'"))
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and(depth)?];
        while self.is_kw("or") {
            self.next();
            terms.push(self.and(depth)?);
        }
        Ok(Expr::or(terms))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.primary(depth)?];
        while self.is_kw("and") {
            self.next();
            terms.push(self.primary(depth)?);
        }
        Ok(Expr::and(terms))
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if *self.peek() == Tok::LParen {
            let open = self.pos();
            if depth >= MAX_DEPTH {
                return err(
                    open,
                    format!("parentheses nested deeper than {MAX_DEPTH} levels"),
                );
            }
            self.next();
            let e = self.or(depth + 1)?;
            if *self.peek() != Tok::RParen {
                return err(
                    self.pos(),
                    format!("expected ')' (to close the '(' at character {open})"),
                );
            }
            self.next();
            return Ok(e);
        }
        self.condition().map(Expr::Cond)
    }

    fn condition(&mut self) -> Result<Cond, ParseError> {
        let pos = self.pos();
        let name = match self.peek() {
            Tok::Word(w) => w.clone(),
            Tok::End => return err(pos, "the filter ended where a condition was expected"),
            _ => return err(pos, "expected a field name"),
        };
        let field = *self
            .columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ParseError {
                pos,
                msg: format!(
                    "unknown field {name:?}; known here: {}",
                    self.columns
                        .iter()
                        .map(|c| c.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return err(pos, format!("more than {MAX_CONDITIONS} conditions"));
        }
        self.next();
        let op_pos = self.pos();
        let op = match self.peek() {
            Tok::Word(w) => w.to_ascii_lowercase(),
            _ => return err(op_pos, format!("expected an operator after {name:?}")),
        };
        self.next();
        let cmp = match op.as_str() {
            "eq" => Some(CmpOp::Eq),
            "ne" => Some(CmpOp::Ne),
            "gt" => Some(CmpOp::Gt),
            "lt" => Some(CmpOp::Lt),
            "ge" => Some(CmpOp::Ge),
            "le" => Some(CmpOp::Le),
            _ => None,
        };
        let test = if let Some(cmp) = cmp {
            Test::Cmp(cmp, self.value(field)?)
        } else {
            match op.as_str() {
                "in" => Test::In(false, self.list(field)?),
                "notin" => Test::In(true, self.list(field)?),
                "like" => Test::Like(false, self.pattern(field, "like")?),
                "similar" => {
                    self.expect_kw("to")?;
                    Test::Similar(false, self.regex(field)?)
                }
                "not" if self.is_kw("like") => {
                    self.next();
                    Test::Like(true, self.pattern(field, "not like")?)
                }
                "not" if self.is_kw("similar") => {
                    self.next();
                    self.expect_kw("to")?;
                    Test::Similar(true, self.regex(field)?)
                }
                "not" => return err(self.pos(), "expected 'like' or 'similar to' after 'not'"),
                "is" if self.is_kw("not") => {
                    self.next();
                    self.expect_kw("null")?;
                    Test::Null(true)
                }
                "is" => {
                    self.expect_kw("null")?;
                    Test::Null(false)
                }
                "isnot" => {
                    self.expect_kw("null")?;
                    Test::Null(true)
                }
                _ => {
                    return err(
                        op_pos,
                        format!(
                            "unknown operator {op:?}; expected eq, ne, gt, lt, ge, le, in, notin, \
                             like, not like, similar to, not similar to, is null or isnot null"
                        ),
                    )
                }
            }
        };
        Ok(Cond { field, test })
    }

    /// One literal, of the type the field takes: text fields take strings or numbers (compared
    /// as the text written), number fields take numbers only.
    fn value(&mut self, field: &Column) -> Result<Lit, ParseError> {
        let pos = self.pos();
        let lit = match self.peek() {
            Tok::Str(_) if field.kind == Kind::Number => {
                return err(
                    pos,
                    format!("{} is a metric and takes a bare number", field.name),
                );
            }
            Tok::Str(s) => Lit::Str(s.clone()),
            Tok::Num(n) => Lit::Num(n.clone()),
            _ => return err(pos, "expected a quoted string or a number"),
        };
        self.values += 1;
        if self.values > MAX_VALUES {
            return err(pos, format!("more than {MAX_VALUES} values"));
        }
        self.next();
        Ok(lit)
    }

    fn list(&mut self, field: &Column) -> Result<Vec<Lit>, ParseError> {
        let paren = *self.peek() == Tok::LParen;
        let open = self.pos();
        if paren {
            self.next();
        }
        let mut items = vec![self.value(field)?];
        while *self.peek() == Tok::Comma {
            self.next();
            items.push(self.value(field)?);
        }
        if paren {
            if *self.peek() != Tok::RParen {
                return err(
                    self.pos(),
                    format!("expected ',' or ')' (to close the list opened at character {open})"),
                );
            }
            self.next();
        }
        Ok(items)
    }

    fn string(&mut self, field: &Column, op: &str) -> Result<(String, usize), ParseError> {
        let pos = self.pos();
        if field.kind == Kind::Number {
            return err(
                pos,
                format!("{op} applies to dimensions; {} is a metric", field.name),
            );
        }
        match self.peek() {
            Tok::Str(s) => {
                let s = s.clone();
                self.values += 1;
                if self.values > MAX_VALUES {
                    return err(pos, format!("more than {MAX_VALUES} values"));
                }
                self.next();
                Ok((s, pos))
            }
            _ => err(pos, format!("expected a quoted pattern after '{op}'")),
        }
    }

    fn pattern(&mut self, field: &Column, op: &str) -> Result<String, ParseError> {
        self.string(field, op).map(|(s, _)| s)
    }

    fn regex(&mut self, field: &Column) -> Result<String, ParseError> {
        let (s, pos) = self.string(field, "similar to")?;
        if let Err(e) = compile_regex(&s) {
            let why = match e {
                regex::Error::CompiledTooBig(_) => "the pattern is too large once compiled".into(),
                other => other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_owned(),
            };
            return err(pos, format!("invalid regular expression ({why})"));
        }
        Ok(s)
    }
}

/// Prints a tree as a filter that parses back into the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(terms) => {
                for (i, t) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{t}")?;
                }
                Ok(())
            }
            Expr::And(terms) => {
                for (i, t) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    match t {
                        Expr::Or(_) => write!(f, "({t})")?,
                        _ => write!(f, "{t}")?,
                    }
                }
                Ok(())
            }
            Expr::Cond(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.field.name;
        match &self.test {
            Test::Cmp(op, v) => write!(f, "{name} {} {v}", op.word()),
            Test::In(neg, items) => {
                write!(f, "{name} {} (", if *neg { "notin" } else { "in" })?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Test::Like(neg, p) => write!(
                f,
                "{name} {}like {}",
                if *neg { "not " } else { "" },
                quote(p)
            ),
            Test::Similar(neg, p) => write!(
                f,
                "{name} {}similar to {}",
                if *neg { "not " } else { "" },
                quote(p)
            ),
            Test::Null(neg) => write!(f, "{name} {} null", if *neg { "isnot" } else { "is" }),
        }
    }
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => f.write_str(&quote(s)),
            Lit::Num(n) => f.write_str(n),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Translates a tree into an SQL condition. Column text comes only from the whitelisted
/// [`Column::sql`]; each literal is pushed onto `params` and referenced as `?N` (its 1-based
/// index there), so `params` may already hold the query's other parameters. `regexp` is the
/// name of the registered regex function, called as `regexp(pattern, value)`.
pub fn to_sql(e: &Expr, regexp: &str, params: &mut Vec<Value>) -> String {
    let mut out = String::new();
    write_sql(e, regexp, params, &mut out);
    out
}

fn write_sql(e: &Expr, regexp: &str, params: &mut Vec<Value>, out: &mut String) {
    match e {
        Expr::Or(terms) | Expr::And(terms) => {
            let join = if matches!(e, Expr::Or(_)) {
                " OR "
            } else {
                " AND "
            };
            out.push('(');
            for (i, t) in terms.iter().enumerate() {
                if i > 0 {
                    out.push_str(join);
                }
                write_sql(t, regexp, params, out);
            }
            out.push(')');
        }
        Expr::Cond(c) => write_cond(c, regexp, params, out),
    }
}

fn bind(params: &mut Vec<Value>, field: &Column, lit: &Lit) -> String {
    params.push(match (lit, field.kind) {
        (Lit::Str(s), _) => Value::Text(s.clone()),
        (Lit::Num(n), Kind::Text) => Value::Text(n.clone()),
        (Lit::Num(n), Kind::Number) => Value::Real(n.parse().unwrap_or(0.0)),
    });
    format!("?{}", params.len())
}

fn write_cond(c: &Cond, regexp: &str, params: &mut Vec<Value>, out: &mut String) {
    let col = c.field.sql;
    let s = match &c.test {
        Test::Cmp(op, v) => {
            let sql_op = match op {
                CmpOp::Eq => "=",
                // A negation is the exact complement of its positive form: rows without a
                // value match it.
                CmpOp::Ne => "IS NOT",
                CmpOp::Gt => ">",
                CmpOp::Lt => "<",
                CmpOp::Ge => ">=",
                CmpOp::Le => "<=",
            };
            format!("({col} {sql_op} {})", bind(params, c.field, v))
        }
        Test::In(neg, items) => {
            let list: Vec<String> = items.iter().map(|v| bind(params, c.field, v)).collect();
            if *neg {
                format!("({col} IS NULL OR {col} NOT IN ({}))", list.join(", "))
            } else {
                format!("({col} IN ({}))", list.join(", "))
            }
        }
        Test::Like(neg, p) => {
            let ph = bind(params, c.field, &Lit::Str(p.clone()));
            if *neg {
                format!("({col} IS NULL OR {col} NOT LIKE {ph})")
            } else {
                format!("({col} LIKE {ph})")
            }
        }
        Test::Similar(neg, p) => {
            let ph = bind(params, c.field, &Lit::Str(p.clone()));
            if *neg {
                format!("({col} IS NULL OR NOT {regexp}({ph}, {col}))")
            } else {
                format!("({regexp}({ph}, {col}))")
            }
        }
        Test::Null(false) => format!("({col} IS NULL)"),
        Test::Null(true) => format!("({col} IS NOT NULL)"),
    };
    out.push_str(&s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static BRANCH: Column = Column {
        name: "branch",
        sql: "r.branch",
        kind: Kind::Text,
    };
    static STATUS: Column = Column {
        name: "status",
        sql: "r.status",
        kind: Kind::Text,
    };
    static DURATION: Column = Column {
        name: "duration",
        sql: "(r.stopped_at - r.started_at) / 1000.0",
        kind: Kind::Number,
    };
    static COLUMNS: [&Column; 3] = [&BRANCH, &STATUS, &DURATION];

    fn check(input: &str, expected_sql: &str, expected_params: &[Value]) {
        let e = parse(input, &COLUMNS).unwrap_or_else(|e| panic!("{input}: {e}"));
        let mut params = Vec::new();
        assert_eq!(to_sql(&e, "re", &mut params), expected_sql, "{input}");
        assert_eq!(params, expected_params, "{input}");
    }

    fn check_err(input: &str, pos: usize, needle: &str) {
        let e = parse(input, &COLUMNS).expect_err(input);
        assert_eq!(e.pos, pos, "{input}: {e}");
        assert!(e.msg.contains(needle), "{input}: {e}");
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn conditions_translate_to_bound_sql() {
        check("branch eq 'main'", "(r.branch = ?1)", &[t("main")]);
        check(
            "(status in 'failed','error')",
            "(r.status IN (?1, ?2))",
            &[t("failed"), t("error")],
        );
        check(
            "status notin ('a')",
            "(r.status IS NULL OR r.status NOT IN (?1))",
            &[t("a")],
        );
        check(
            "duration gt 600",
            "((r.stopped_at - r.started_at) / 1000.0 > ?1)",
            &[Value::Real(600.0)],
        );
        check("branch eq 42", "(r.branch = ?1)", &[t("42")]);
        check(
            "branch not like 'rel%'",
            "(r.branch IS NULL OR r.branch NOT LIKE ?1)",
            &[t("rel%")],
        );
        check("branch similar to 'f.*'", "(re(?1, r.branch))", &[t("f.*")]);
        check("branch is null", "(r.branch IS NULL)", &[]);
        check("branch isnot null", "(r.branch IS NOT NULL)", &[]);
        check("branch IS NOT NULL", "(r.branch IS NOT NULL)", &[]);
        check("branch eq 'it''s'", "(r.branch = ?1)", &[t("it's")]);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a or b and c  ==  a or (b and c)
        check(
            "branch eq 'a' or branch eq 'b' and status eq 'c'",
            "((r.branch = ?1) OR ((r.branch = ?2) AND (r.status = ?3)))",
            &[t("a"), t("b"), t("c")],
        );
        check(
            "(branch eq 'a' or branch eq 'b') AND status eq 'c'",
            "(((r.branch = ?1) OR (r.branch = ?2)) AND (r.status = ?3))",
            &[t("a"), t("b"), t("c")],
        );
    }

    #[test]
    fn errors_name_the_position() {
        check_err("branch eq", 10, "expected a quoted string");
        check_err("(branch eq 'a'", 15, "expected ')'");
        check_err("branch eq 'a')", 14, "unbalanced ')'");
        check_err("branch eq 'a", 11, "unterminated string");
        check_err("nope eq 'a'", 1, "unknown field");
        check_err("branch equals 'a'", 8, "unknown operator");
        check_err("duration gt '600'", 13, "bare number");
        check_err("duration like '6%'", 15, "metric");
        check_err("branch eq 'a'; DROP TABLE runs", 14, "unexpected character");
        check_err("branch similar to '('", 19, "invalid regular expression");
        check_err("branch eq 'a' and", 18, "ended");
        check_err("", 1, "ended");
        check_err("branch eq 1e999", 11, "out of range");
        check_err("branch eq 'é' or ñ", 18, "unexpected character");
        let deep = format!("{}branch eq 'a'{}", "(".repeat(10_000), ")".repeat(10_000));
        check_err(&deep, MAX_DEPTH + 1, "nested deeper");
        let many = vec!["branch eq 'a'"; MAX_CONDITIONS + 1].join(" or ");
        check_err(&many, MAX_CONDITIONS * 17 + 1, "conditions");
        let long = format!("branch eq '{}'", "x".repeat(MAX_CHARS));
        check_err(&long, MAX_CHARS + 1, "characters long");
    }

    #[test]
    fn regex_size_is_limited() {
        // A counted repetition that compiles to far more than the limit.
        let e = parse("branch similar to '(\\w{100}){100}'", &COLUMNS).expect_err("too big");
        assert!(e.msg.contains("too large"), "{e}");
    }

    fn lit_text() -> impl Strategy<Value = Lit> {
        prop_oneof![
            "[a-z' %_.]{0,8}".prop_map(Lit::Str),
            (-1000i64..1000).prop_map(|n| Lit::Num(n.to_string())),
            (0u32..10_000).prop_map(|n| Lit::Num(format!("{}.{}", n / 100, n % 100))),
        ]
    }

    fn num() -> impl Strategy<Value = Lit> {
        (-1000i64..1000).prop_map(|n| Lit::Num(n.to_string()))
    }

    fn cond() -> impl Strategy<Value = Expr> {
        let cmp = prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Gt),
            Just(CmpOp::Lt),
            Just(CmpOp::Ge),
            Just(CmpOp::Le)
        ];
        let text_col = prop_oneof![Just(&BRANCH), Just(&STATUS)];
        let text = (
            text_col,
            prop_oneof![
                (cmp.clone(), lit_text()).prop_map(|(o, v)| Test::Cmp(o, v)),
                (any::<bool>(), prop::collection::vec(lit_text(), 1..4))
                    .prop_map(|(n, v)| Test::In(n, v)),
                (any::<bool>(), "[a-z%_']{0,6}").prop_map(|(n, p)| Test::Like(n, p)),
                (any::<bool>(), "[a-z]{0,4}(\\.\\*)?").prop_map(|(n, p)| Test::Similar(n, p)),
                any::<bool>().prop_map(Test::Null),
            ],
        )
            .prop_map(|(field, test)| Expr::Cond(Cond { field, test }));
        let number = prop_oneof![
            (cmp, num()).prop_map(|(o, v)| Test::Cmp(o, v)),
            (any::<bool>(), prop::collection::vec(num(), 1..4)).prop_map(|(n, v)| Test::In(n, v)),
            any::<bool>().prop_map(Test::Null),
        ]
        .prop_map(|test| {
            Expr::Cond(Cond {
                field: &DURATION,
                test,
            })
        });
        prop_oneof![text, number]
    }

    fn expr() -> impl Strategy<Value = Expr> {
        cond().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::and),
                prop::collection::vec(inner, 2..4).prop_map(Expr::or),
            ]
        })
    }

    /// Words, symbols and fragments that filters are made of, glued at random.
    fn noise() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("branch".to_owned()),
            Just("duration".to_owned()),
            Just("status".to_owned()),
            Just("eq".to_owned()),
            Just("in".to_owned()),
            Just("not".to_owned()),
            Just("like".to_owned()),
            Just("similar to".to_owned()),
            Just("is".to_owned()),
            Just("isnot".to_owned()),
            Just("null".to_owned()),
            Just("and".to_owned()),
            Just("or".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(",".to_owned()),
            Just("'".to_owned()),
            Just("''".to_owned()),
            Just("-".to_owned()),
            "'[^']{0,5}'",
            "[0-9.eE+-]{1,6}",
            "\\PC{1,3}",
        ];
        prop::collection::vec(piece, 0..16).prop_map(|v| v.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn printed_trees_parse_back(e in expr()) {
            let printed = e.to_string();
            let back = parse(&printed, &COLUMNS);
            prop_assert_eq!(back, Ok(e), "{}", printed);
        }

        #[test]
        fn random_text_never_panics(s in noise()) {
            match parse(&s, &COLUMNS) {
                Ok(e) => {
                    // A parsed filter prints to one that parses to the same tree,
                    // and translates without panicking.
                    prop_assert_eq!(parse(&e.to_string(), &COLUMNS), Ok(e.clone()));
                    let mut params = Vec::new();
                    let sql = to_sql(&e, "re", &mut params);
                    prop_assert!(!sql.contains('\''), "{}", sql);
                }
                Err(err) => prop_assert!(err.pos >= 1 && err.pos <= s.chars().count() + 1),
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics(s in "\\PC{0,40}") {
            if let Err(err) = parse(&s, &COLUMNS) {
                prop_assert!(err.pos >= 1 && err.pos <= s.chars().count() + 1);
            }
        }
    }
}
