//! JUnit / xUnit XML reports: the test cases they hold, read with quick-xml's pull parser.
//!
//! The parser accepts what JUnit, Surefire, TestNG, pytest, unittest, jest-junit, PHPUnit, Nette
//! Tester and XCTest write: a root `<testsuites>` or `<testsuite>`, suites nested to any depth, and
//! `<testcase>` elements whose `<failure>`, `<error>`, `<skipped>` or `<ignored>` child gives the
//! outcome. Everything else (`<properties>`, `<system-out>`, comments, CDATA, DTDs, processing
//! instructions) is skipped.
//!
//! The input is an untrusted HTTP body. Every problem is a [`ReportError`] naming a line, and
//! nesting depth, attributes per element, case count and the memory spent on copies of suite
//! names are bounded. Attribute values are unescaped but otherwise kept as written, so a name
//! holding a raw line break keeps it; text content has its line ends normalized to `\n`.

use std::fmt;

use quick_xml::errors::{Error as XmlError, IllFormedError};
use quick_xml::escape::{resolve_predefined_entity, EscapeError};
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

use crate::model::{TestCase, TestOutcome};

/// The deepest element nesting accepted; the root element is at depth 1.
const MAX_DEPTH: usize = 256;
/// The most attributes one element may have: quick-xml's duplicate check is quadratic in them.
const MAX_ATTRIBUTES: usize = 64;
/// The most test cases one report may hold.
const MAX_CASES: usize = 1_000_000;
/// The most bytes of suite names copied into test cases, summed over all cases. Each case gets
/// its own copy of its suite's name, so without this bound a long name over many small cases
/// would make a small report allocate without limit.
const MAX_SUITE_NAME_COPIES: usize = 64 << 20;
/// The longest message kept, in bytes; longer ones are cut at the char boundary below this.
const MAX_MESSAGE_BYTES: usize = 4096;

/// A report that is not well-formed XML or not a JUnit report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportError {
    /// The 1-based line where the problem was found.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ReportError {}

/// Parses a JUnit / xUnit XML report into its test cases, in document order.
///
/// A case's `suite` is the `name` of its innermost enclosing `<testsuite>`. Its outcome is the
/// strongest of its `<error>`, `<failure>` and `<skipped>`/`<ignored>` children, in that order,
/// and its message comes from that child: the `message` attribute, else the trimmed text.
pub fn parse(xml: &[u8]) -> Result<Vec<TestCase>, ReportError> {
    Parser::new(xml).run()
}

/// What an open element is to the parser.
#[derive(Clone, Copy)]
enum Role {
    /// A `<testsuite>`, whose name is on top of `Parser::suites`.
    Suite,
    /// A `<testcase>`, being built in `Parser::case`.
    Case,
    /// A `<failure>`, `<error>`, `<skipped>` or `<ignored>` child of a case, being built in
    /// `Parser::outcome`.
    Outcome,
    /// Any other element, including `<testsuites>`.
    Other,
}

/// An open element: its role and where its name lies in the input, for error messages.
struct Frame {
    role: Role,
    name_start: usize,
    name_len: usize,
}

/// An outcome element whose end has not been seen yet.
struct PendingOutcome {
    result: TestOutcome,
    /// The `message` attribute, when it has any non-whitespace content.
    message: Option<String>,
    /// The text content so far, with leading whitespace dropped, grown to just past the limit.
    text: String,
}

struct Parser<'a> {
    input: &'a [u8],
    reader: Reader<&'a [u8]>,
    stack: Vec<Frame>,
    /// The names of the open `<testsuite>` elements, innermost last.
    suites: Vec<Option<String>>,
    case: Option<TestCase>,
    outcome: Option<PendingOutcome>,
    cases: Vec<TestCase>,
    /// The bytes of suite names copied into `cases` so far.
    suite_name_copies: usize,
    seen_root: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(input);
        // These are quick-xml's defaults, set here because the parser relies on them to reject
        // mismatched and unmatched end tags.
        let config = reader.config_mut();
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        Parser {
            input,
            reader,
            stack: Vec::new(),
            suites: Vec::new(),
            case: None,
            outcome: None,
            cases: Vec::new(),
            suite_name_copies: 0,
            seen_root: false,
        }
    }

    fn run(mut self) -> Result<Vec<TestCase>, ReportError> {
        loop {
            // Text is its own event, so before any markup event the reader stands on its `<` or `&`.
            let start = self.reader.buffer_position();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(err) => return Err(self.error(self.reader.error_position(), err)),
            };
            match event {
                Event::Start(element) => self.open(&element, start)?,
                Event::Empty(element) => {
                    self.open(&element, start)?;
                    self.close();
                }
                Event::End(_) => self.close(),
                Event::Text(text) => {
                    if self.stack.is_empty() {
                        if let Some(offset) = text.iter().position(|b| !b.is_ascii_whitespace()) {
                            let at = start.saturating_add(offset as u64);
                            return Err(self.error(at, "text outside the root element"));
                        }
                    } else if self.outcome.is_some() {
                        let text = text.xml10_content().map_err(|e| self.error(start, e))?;
                        self.push_text(&text);
                    }
                }
                Event::CData(cdata) => {
                    if self.stack.is_empty() {
                        return Err(self.error(start, "CDATA outside the root element"));
                    }
                    if self.outcome.is_some() {
                        let text = cdata.xml10_content().map_err(|e| self.error(start, e))?;
                        self.push_text(&text);
                    }
                }
                Event::GeneralRef(reference) => {
                    if self.stack.is_empty() {
                        return Err(self.error(start, "reference outside the root element"));
                    }
                    if self.outcome.is_some() {
                        let text = self.resolve(&reference, start)?;
                        self.push_text(&text);
                    }
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Eof => return self.finish(),
            }
        }
    }

    /// Handles the start of an element that begins at byte `start` of the input.
    fn open(&mut self, element: &BytesStart, start: u64) -> Result<(), ReportError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(start, format!("elements nested more than {MAX_DEPTH} deep")));
        }
        let name = element.name();
        let name = name.as_ref();
        if self.stack.is_empty() {
            if self.seen_root {
                return Err(self.error(start, "content after the root element"));
            }
            if name != b"testsuites" && name != b"testsuite" {
                let found = String::from_utf8_lossy(name);
                let message =
                    format!("root element must be <testsuites> or <testsuite>, found <{found}>");
                return Err(self.error(start, message));
            }
            self.seen_root = true;
        }
        let role = if self.case.is_some() {
            match (self.stack.last().map(|frame| frame.role), outcome_of(name)) {
                (Some(Role::Case), Some(result)) => {
                    let [message] = self.attributes(element, start, [b"message"])?;
                    self.outcome = Some(PendingOutcome {
                        result,
                        message: message.filter(|m| !m.trim().is_empty()),
                        text: String::new(),
                    });
                    Role::Outcome
                }
                _ => {
                    self.attributes(element, start, [])?;
                    Role::Other
                }
            }
        } else if name == b"testsuite" {
            let [suite] = self.attributes(element, start, [b"name"])?;
            self.suites.push(suite.filter(|s| !s.is_empty()));
            Role::Suite
        } else if name == b"testcase" {
            self.open_case(element, start)?;
            Role::Case
        } else {
            self.attributes(element, start, [])?;
            Role::Other
        };
        self.stack.push(Frame {
            role,
            name_start: to_index(start).saturating_add(1),
            name_len: name.len(),
        });
        Ok(())
    }

    /// Starts building the test case that a `<testcase>` element at byte `start` describes.
    fn open_case(&mut self, element: &BytesStart, start: u64) -> Result<(), ReportError> {
        if self.cases.len() >= MAX_CASES {
            return Err(self.error(start, format!("more than {MAX_CASES} test cases")));
        }
        let [name, classname, class, file, time] = self.attributes(
            element,
            start,
            [b"name", b"classname", b"class", b"file", b"time"],
        )?;
        let Some(name) = name else {
            return Err(self.error(start, "<testcase> without a name attribute"));
        };
        let suite = self.suites.last().and_then(Option::as_ref);
        self.suite_name_copies += suite.map_or(0, String::len);
        if self.suite_name_copies > MAX_SUITE_NAME_COPIES {
            let message = format!(
                "report too large: its test cases repeat more than {} MiB of suite names",
                MAX_SUITE_NAME_COPIES >> 20
            );
            return Err(self.error(start, message));
        }
        let suite = suite.cloned();
        let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
        self.case = Some(TestCase {
            name,
            classname: non_empty(classname).or_else(|| non_empty(class)),
            file: non_empty(file),
            suite,
            result: TestOutcome::Success,
            duration: time.as_deref().and_then(parse_seconds),
            message: None,
        });
        Ok(())
    }

    /// Handles the end of the innermost open element; quick-xml has checked that the names match.
    fn close(&mut self) {
        match self.stack.pop().map(|frame| frame.role) {
            Some(Role::Suite) => {
                self.suites.pop();
            }
            Some(Role::Case) => self.cases.extend(self.case.take()),
            Some(Role::Outcome) => {
                if let (Some(outcome), Some(case)) = (self.outcome.take(), self.case.as_mut()) {
                    if rank(outcome.result) > rank(case.result) {
                        case.result = outcome.result;
                        case.message =
                            finish_message(outcome.message.as_deref().unwrap_or(&outcome.text));
                    }
                }
            }
            Some(Role::Other) | None => {}
        }
    }

    /// Ends the document: a report whose root is missing or still open is an error.
    fn finish(self) -> Result<Vec<TestCase>, ReportError> {
        let end = self.input.len() as u64;
        if let Some(frame) = self.stack.last() {
            let name = self
                .input
                .get(frame.name_start..frame.name_start.saturating_add(frame.name_len))
                .unwrap_or_default();
            let missing = IllFormedError::MissingEndTag(String::from_utf8_lossy(name).into_owned());
            return Err(self.error(end, XmlError::IllFormed(missing)));
        }
        if !self.seen_root {
            return Err(self.error(end, "no root element"));
        }
        Ok(self.cases)
    }

    /// Checks the syntax of every attribute of `element` (at byte `start`) and returns the
    /// unescaped values of those named in `wanted`, in the same order.
    fn attributes<const N: usize>(
        &self,
        element: &BytesStart,
        start: u64,
        wanted: [&[u8]; N],
    ) -> Result<[Option<String>; N], ReportError> {
        let mut values = [const { None }; N];
        for (index, attribute) in element.attributes().enumerate() {
            if index == MAX_ATTRIBUTES {
                let message = format!("an element with more than {MAX_ATTRIBUTES} attributes");
                return Err(self.error(start, message));
            }
            let attribute = attribute.map_err(|err| {
                // Attribute errors count from the first byte after the element's `<`.
                let offset = match err {
                    AttrError::ExpectedEq(at)
                    | AttrError::ExpectedValue(at)
                    | AttrError::UnquotedValue(at)
                    | AttrError::ExpectedQuote(at, _)
                    | AttrError::Duplicated(at, _) => at,
                };
                let at = start.saturating_add(1).saturating_add(offset as u64);
                self.error(at, XmlError::InvalidAttr(err))
            })?;
            let key = attribute.key.as_ref();
            if let Some(slot) = wanted.iter().position(|w| *w == key) {
                let value = attribute
                    .decode_and_unescape_value(self.reader.decoder())
                    .map_err(|err| {
                        let key = String::from_utf8_lossy(key);
                        self.error(start, format!("attribute `{key}`: {err}"))
                    })?;
                values[slot] = Some(value.into_owned());
            }
        }
        Ok(values)
    }

    /// Resolves a character or predefined entity reference at byte `start`.
    fn resolve(&self, reference: &BytesRef, start: u64) -> Result<String, ReportError> {
        match reference.resolve_char_ref() {
            Ok(Some(ch)) => return Ok(ch.to_string()),
            Ok(None) => {}
            Err(err) => return Err(self.error(start, err)),
        }
        let name = reference.decode().map_err(|err| self.error(start, err))?;
        match resolve_predefined_entity(&name) {
            Some(text) => Ok(text.to_owned()),
            None => {
                // The entity's name starts right after its `&`.
                let from = to_index(start).saturating_add(1);
                let range = from..from.saturating_add(name.len());
                let unknown = EscapeError::UnrecognizedEntity(range, name.into_owned());
                Err(self.error(start, XmlError::Escape(unknown)))
            }
        }
    }

    /// Adds text content to the open outcome element, keeping only what the message can use.
    fn push_text(&mut self, text: &str) {
        if let Some(outcome) = self.outcome.as_mut() {
            if outcome.text.len() > MAX_MESSAGE_BYTES {
                return;
            }
            let text = if outcome.text.is_empty() {
                text.trim_start()
            } else {
                text
            };
            outcome.text.push_str(text);
        }
    }

    /// A report error at byte `position` of the input.
    fn error(&self, position: u64, message: impl fmt::Display) -> ReportError {
        let end = to_index(position).min(self.input.len());
        let newlines = self.input[..end].iter().filter(|&&b| b == b'\n').count();
        ReportError {
            line: newlines + 1,
            message: message.to_string(),
        }
    }
}

/// The outcome that a child element of a `<testcase>` stands for, if any.
fn outcome_of(name: &[u8]) -> Option<TestOutcome> {
    match name {
        b"failure" => Some(TestOutcome::Failure),
        b"error" => Some(TestOutcome::Error),
        b"skipped" | b"ignored" => Some(TestOutcome::Skipped),
        _ => None,
    }
}

/// How strongly an outcome overrides others found on the same case.
fn rank(outcome: TestOutcome) -> u8 {
    match outcome {
        TestOutcome::Success => 0,
        TestOutcome::Skipped => 1,
        TestOutcome::Failure => 2,
        TestOutcome::Error => 3,
    }
}

/// Trims a message and cuts it to the size limit at a char boundary; an empty message is none.
fn finish_message(message: &str) -> Option<String> {
    let trimmed = message.trim();
    let mut cut = trimmed.len().min(MAX_MESSAGE_BYTES);
    while !trimmed.is_char_boundary(cut) {
        cut -= 1;
    }
    let kept = &trimmed[..cut];
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// Parses a `time` attribute: non-negative, finite seconds, or nothing.
fn parse_seconds(text: &str) -> Option<f64> {
    let seconds: f64 = text.trim().parse().ok()?;
    (seconds.is_finite() && !seconds.is_sign_negative()).then_some(seconds)
}

/// A reader position as an index into the input, saturating on targets narrower than 64 bits.
fn to_index(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture reports, shared by every crate of the workspace.
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit/");

    /// Expected [success, failure, error, skipped] counts per fixture file.
    ///
    /// These were not taken from this parser. They were counted with Python's
    /// `xml.etree.ElementTree` by the same rules: every `<testcase>` outside another test case is
    /// one case, and its outcome is error if it has an `<error>` child, else failure if it has a
    /// `<failure>` child, else skipped if it has a `<skipped>` or `<ignored>` child, else success.
    const EXPECTED: [(&str, [usize; 4]); 11] = [
        ("empty-jest-junit-empty-testsuite.xml", [0, 0, 0, 0]),
        (
            "java-TEST-org.apache.pulsar.AddMissingPatchVersionTest.xml",
            [0, 1, 0, 1],
        ),
        ("java-pulsar-test-report.xml", [793, 1, 0, 14]),
        ("jest-jest-test-results.xml", [4207, 2, 0, 30]),
        ("jest-junit.xml", [1, 4, 0, 1]),
        ("junit-with-message.xml", [0, 1, 0, 0]),
        ("nette-tester-tester-v1.7-report.xml", [61, 1, 0, 3]),
        ("phpunit-phpunit.xml", [10, 2, 0, 0]),
        ("python-xunit-pytest.xml", [6, 2, 0, 2]),
        ("python-xunit-unittest.xml", [4, 1, 1, 2]),
        ("swift-xunit.xml", [2, 1, 0, 0]),
    ];

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}{name}");
        std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"))
    }

    fn counts(cases: &[TestCase]) -> [usize; 4] {
        let mut counts = [0; 4];
        for case in cases {
            let slot = match case.result {
                TestOutcome::Success => 0,
                TestOutcome::Failure => 1,
                TestOutcome::Error => 2,
                TestOutcome::Skipped => 3,
            };
            counts[slot] += 1;
        }
        counts
    }

    fn parse_str(xml: &str) -> Result<Vec<TestCase>, ReportError> {
        parse(xml.as_bytes())
    }

    #[test]
    fn every_fixture_has_expected_counts() {
        for (name, expected) in EXPECTED {
            let cases = parse(&fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(counts(&cases), expected, "{name}");
        }
    }

    #[test]
    fn every_fixture_file_is_counted() {
        let mut on_disk: Vec<String> = std::fs::read_dir(FIXTURES)
            .expect("fixture directory")
            .map(|entry| {
                entry
                    .expect("fixture entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".xml"))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn empty_suite_fixture_has_no_cases() {
        let cases = parse(&fixture("empty-jest-junit-empty-testsuite.xml")).unwrap();
        assert!(cases.is_empty());
    }

    #[test]
    fn fixture_details() {
        let cases = parse(&fixture("python-xunit-unittest.xml")).unwrap();
        let error = cases
            .iter()
            .find(|c| c.result == TestOutcome::Error)
            .unwrap();
        assert_eq!(error.name, "test_error");
        assert_eq!(error.classname.as_deref(), Some("TestAcme"));
        assert_eq!(error.file.as_deref(), Some("tests/test_lib.py"));
        assert_eq!(error.suite.as_deref(), Some("TestAcme-20251114214921"));
        assert_eq!(error.message.as_deref(), Some("error"));
        assert_eq!(error.duration, Some(0.0));

        // jest-junit writes the failure text as content, with escaped angle brackets.
        let cases = parse(&fixture("jest-junit.xml")).unwrap();
        let failing = &cases[1];
        assert_eq!(failing.name, "Failing test");
        assert_eq!(failing.classname.as_deref(), Some("Test 1 › Test 1.1"));
        assert_eq!(failing.suite.as_deref(), Some("__tests__\\main.test.js"));
        let message = failing.message.as_deref().unwrap();
        assert!(message.starts_with("Error: expect(received).toBeTruthy()\n\nReceived: false"));
        assert!(message.contains("at Object.<anonymous> (C:\\Users"));
        assert!(message.ends_with("(internal/process/task_queues.js:97:5)"));

        // Nette Tester's suite has no name, and its failure message is a multi-line attribute.
        let cases = parse(&fixture("nette-tester-tester-v1.7-report.xml")).unwrap();
        assert!(cases
            .iter()
            .all(|c| c.suite.is_none() && c.duration.is_none()));
        let failure = cases
            .iter()
            .find(|c| c.result == TestOutcome::Failure)
            .unwrap();
        assert!(failure
            .message
            .as_deref()
            .unwrap()
            .starts_with("Failed: '... in /Users/izso"));

        // PHPUnit nests suites: cases take the innermost suite's name.
        let cases = parse(&fixture("phpunit-phpunit.xml")).unwrap();
        assert_eq!(cases[0].suite.as_deref(), Some("CLI Arguments"));
        assert_eq!(
            cases[11].suite.as_deref(),
            Some("PHPUnit\\Event\\DirectDispatcherTest")
        );

        // jest writes an empty classname, which is no classname.
        let cases = parse(&fixture("jest-jest-test-results.xml")).unwrap();
        assert_eq!(cases[0].classname, None);
        assert_eq!(cases[0].name, "picks a name based on the rootDir");

        // Two jest test names hold raw CR LF and CR bytes; attribute values are kept as written.
        let snapshot_names: Vec<&str> = cases
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| n.starts_with("saveSnapshotFile() works with"))
            .collect();
        assert_eq!(
            snapshot_names,
            [
                "saveSnapshotFile() works with \r\n",
                "saveSnapshotFile() works with \r"
            ]
        );
    }

    #[test]
    fn text_line_ends_are_normalized() {
        let xml = "<testsuite><testcase name=\"a\"><failure>one\r\ntwo\rthree<![CDATA[\r\nfour]]>\
                   </failure></testcase></testsuite>";
        let cases = parse_str(xml).unwrap();
        assert_eq!(cases[0].message.as_deref(), Some("one\ntwo\nthree\nfour"));
    }

    #[test]
    fn reads_one_case_fully() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE testsuites [<!ELEMENT testsuites ANY>]>
<!-- A comment before the root. -->
<testsuites name="all">
  <testsuite name="unit &amp; more" tests="3">
    <properties><property name="seed" value="42"/></properties>
    <testcase name="adds" classname="math.Add" file="tests/add.rs" time="1.25">
      <failure message="1 + 1 &lt;&gt; 3" type="assert">long trace</failure>
      <system-out>printed &amp; ignored</system-out>
    </testcase>
    <testcase name="subtracts" class="math.Sub" time="-1">
      <?pi ignored?>
      <skipped>
        not on &#x54;uesdays <![CDATA[<really>]]>
      </skipped>
    </testcase>
    <testcase name="divides" classname="" time="">
      <skipped message="slow"/>
      <error message="">division by zero</error>
      <failure message="wrong"/>
    </testcase>
    <testcase name="multiplies" time="abc"/>
  </testsuite>
</testsuites>
"#;
        let cases = parse_str(xml).unwrap();
        assert_eq!(
            cases,
            vec![
                TestCase {
                    name: "adds".into(),
                    classname: Some("math.Add".into()),
                    file: Some("tests/add.rs".into()),
                    suite: Some("unit & more".into()),
                    result: TestOutcome::Failure,
                    duration: Some(1.25),
                    message: Some("1 + 1 <> 3".into()),
                },
                TestCase {
                    name: "subtracts".into(),
                    classname: Some("math.Sub".into()),
                    file: None,
                    suite: Some("unit & more".into()),
                    result: TestOutcome::Skipped,
                    duration: None,
                    message: Some("not on Tuesdays <really>".into()),
                },
                TestCase {
                    name: "divides".into(),
                    classname: None,
                    file: None,
                    suite: Some("unit & more".into()),
                    result: TestOutcome::Error,
                    duration: None,
                    message: Some("division by zero".into()),
                },
                TestCase {
                    name: "multiplies".into(),
                    classname: None,
                    file: None,
                    suite: Some("unit & more".into()),
                    result: TestOutcome::Success,
                    duration: None,
                    message: None,
                },
            ]
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        // Each "é" is two bytes, so 4096 bytes end in the middle of one.
        let long = format!("x{}", "é".repeat(3000));
        let xml = format!(
            "<testsuite><testcase name='a'><failure>\n  {long}  </failure></testcase>\
             <testcase name='b'><error message='{long}'/></testcase></testsuite>"
        );
        let cases = parse_str(&xml).unwrap();
        for case in &cases {
            let message = case.message.as_deref().unwrap();
            assert_eq!(message.len(), 4095);
            assert!(long.starts_with(message));
        }
    }

    #[test]
    fn nested_suites_name_the_innermost() {
        let xml = r#"<testsuite name="outer">
  <testcase name="first"/>
  <testsuite name="inner">
    <testcase name="second"/>
    <testsuite>
      <testcase name="third"/>
    </testsuite>
  </testsuite>
  <testcase name="fourth"/>
</testsuite>"#;
        let suites: Vec<(String, Option<String>)> = parse_str(xml)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.suite))
            .collect();
        assert_eq!(
            suites,
            vec![
                ("first".into(), Some("outer".into())),
                ("second".into(), Some("inner".into())),
                ("third".into(), None),
                ("fourth".into(), Some("outer".into())),
            ]
        );
    }

    #[test]
    fn cases_outside_suites_and_nested_in_cases() {
        // A case directly under <testsuites> has no suite; elements inside a case are not cases.
        let xml = r#"<testsuites><testcase name="loose"><testcase name="inner"><failure/></testcase>
            <system-out><failure/></system-out></testcase></testsuites>"#;
        let cases = parse_str(xml).unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].name, "loose");
        assert_eq!(cases[0].suite, None);
        assert_eq!(cases[0].result, TestOutcome::Success);
    }

    #[test]
    fn root_testsuite_may_be_empty() {
        assert_eq!(parse_str("<testsuite/>"), Ok(vec![]));
        assert_eq!(
            parse_str("\u{feff}<testsuites></testsuites>\n<!-- end -->\n"),
            Ok(vec![])
        );
    }

    #[test]
    fn malformed_report_names_the_line() {
        let xml = "<testsuites>\n  <testsuite name=\"s\">\n    <testcase name=\"a\">\n  </testsuite>\n</testsuites>\n";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(
            err.message,
            "ill-formed document: expected `</testcase>`, but `</testsuite>` was found"
        );
        assert_eq!(
            err.to_string(),
            "line 4: ill-formed document: expected `</testcase>`, but `</testsuite>` was found"
        );

        // An attribute error points at the attribute, even in a tag spread over lines.
        let xml = "<testsuites>\n<testcase\n  name=\"a\"\n  time=1.0/>\n</testsuites>";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(
            err.message.starts_with("error while parsing attribute"),
            "{err}"
        );

        let xml = "<testsuite>\n<testcase name=\"a\" name=\"b\"/>\n</testsuite>";
        assert_eq!(parse_str(xml).unwrap_err().line, 2);

        let xml =
            "<testsuite>\n<testcase name=\"a\">\n<failure>&bogus;</failure></testcase></testsuite>";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unrecognized entity `bogus`"), "{err}");

        let xml = "<testsuite>\n\n<testcase name=\"a &bogus; b\"/></testsuite>";
        assert_eq!(parse_str(xml).unwrap_err().line, 3);

        let xml = "<testsuite>\n<testcase name=\"a\"/>\n</testsuite>\n</testsuites>";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.message.contains("does not match any open tag"), "{err}");

        // Line ends are counted as line feeds, so CRLF input reports the same lines.
        let xml = "<testsuite>\r\n<testcase name=\"a\">\r\n</testsuite>";
        assert_eq!(parse_str(xml).unwrap_err().line, 3);
    }

    #[test]
    fn truncated_report_is_an_error() {
        let xml = "<testsuites>\n<testsuite name=\"s\">\n<testcase name=\"a\"/>\n";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(
            err.message,
            "ill-formed document: start tag not closed: `</testsuite>` not found before end of input"
        );

        let err = parse_str("<testsuites>\n<testsuite name=\"s").unwrap_err();
        assert_eq!(err.line, 2);

        // Every proper prefix of a real report that stops before its root's end tag is an error.
        let xml = fixture("jest-junit.xml");
        let root_end = xml.windows(13).position(|w| w == b"</testsuites>").unwrap();
        for len in 0..root_end + 13 {
            assert!(parse(&xml[..len]).is_err(), "prefix of {len} bytes parsed");
        }
        assert_eq!(counts(&parse(&xml[..root_end + 13]).unwrap()), [1, 4, 0, 1]);
    }

    #[test]
    fn wrong_root_is_an_error() {
        let err = parse_str("<?xml version=\"1.0\"?>\n<html><testsuite/></html>").unwrap_err();
        assert_eq!(
            err,
            ReportError {
                line: 2,
                message: "root element must be <testsuites> or <testsuite>, found <html>".into(),
            }
        );
        assert!(parse_str("<testcase name=\"a\"/>").is_err());
    }

    #[test]
    fn missing_root_is_an_error() {
        for xml in [
            "",
            "  \n",
            "<?xml version=\"1.0\"?>\n",
            "<!-- nothing -->",
            "text",
        ] {
            assert!(parse_str(xml).is_err(), "{xml:?} parsed");
        }
        assert_eq!(parse_str("\n\n").unwrap_err().line, 3);
    }

    #[test]
    fn content_after_the_root_is_an_error() {
        assert_eq!(parse_str("<testsuite/>\n<testsuite/>").unwrap_err().line, 2);
        assert_eq!(parse_str("<testsuite/>\ntrailing").unwrap_err().line, 2);
    }

    #[test]
    fn testcase_without_name_is_an_error() {
        let xml = "<testsuite name=\"s\">\n  <testcase name=\"a\"/>\n  <testcase classname=\"C\"/>\n</testsuite>";
        let err = parse_str(xml).unwrap_err();
        assert_eq!(
            err,
            ReportError {
                line: 3,
                message: "<testcase> without a name attribute".into()
            }
        );

        // An empty name is a name: jest writes one for a test titled "".
        let cases = parse_str("<testsuite><testcase name=\"\"/></testsuite>").unwrap();
        assert_eq!(cases[0].name, "");
    }

    #[test]
    fn durations() {
        let cases = parse_str(
            r#"<testsuite>
                <testcase name="a" time="0.5"/><testcase name="b" time=" 2 "/>
                <testcase name="c" time="1,234.5"/><testcase name="d" time="-0"/>
                <testcase name="e" time="NaN"/><testcase name="f" time="inf"/>
                <testcase name="g" time="1e3"/><testcase name="h"/>
            </testsuite>"#,
        )
        .unwrap();
        let durations: Vec<Option<f64>> = cases.iter().map(|c| c.duration).collect();
        assert_eq!(
            durations,
            [
                Some(0.5),
                Some(2.0),
                None,
                None,
                None,
                None,
                Some(1000.0),
                None
            ]
        );
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let nested = |depth: usize| {
            format!(
                "<testsuite>{}{}</testsuite>",
                "<a>".repeat(depth - 1),
                "</a>".repeat(depth - 1)
            )
        };
        assert_eq!(parse_str(&nested(MAX_DEPTH)), Ok(vec![]));
        let err = parse_str(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err.message, "elements nested more than 256 deep");
        assert!(parse_str(&"<testsuite>".repeat(100_000)).is_err());
    }

    #[test]
    fn element_attributes_are_bounded() {
        let attributes: String = (0..MAX_ATTRIBUTES).map(|i| format!(" a{i}=\"\"")).collect();
        assert_eq!(parse_str(&format!("<testsuite{attributes}/>")), Ok(vec![]));
        let err =
            parse_str(&format!("<testsuite>\n<x{attributes} b=\"\"/></testsuite>")).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.message, "an element with more than 64 attributes");
    }

    #[test]
    fn copies_of_suite_names_are_bounded() {
        // A 1 MiB suite name is fine once, but not copied into more than 64 cases.
        let name = "s".repeat(1 << 20);
        let report = |cases: usize| {
            format!(
                "<testsuite name=\"{name}\">{}</testsuite>",
                "<testcase name=\"\"/>".repeat(cases)
            )
        };
        assert_eq!(parse_str(&report(64)).unwrap().len(), 64);
        let err = parse_str(&report(65)).unwrap_err();
        assert!(err.message.starts_with("report too large"), "{err}");
    }

    #[test]
    fn mangled_input_never_panics() {
        // A fixed pseudo-random sequence of byte overwrites, so failures are reproducible.
        let original = fixture("python-xunit-unittest.xml");
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = b"<>&;/\"'=![]?-\n\xff\xc3";
        for _ in 0..2000 {
            let mut xml = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % xml.len() as u64) as usize;
                xml[at] = specials[(next() % specials.len() as u64) as usize];
            }
            let _ = parse(&xml);
        }
    }
}
