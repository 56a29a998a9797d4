//! What rule compilation reports: a position, a code, a message and, where one helps, a hint.

use std::fmt;
use std::sync::Arc;

use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    /// Information `check` shows (a default that applies); other commands leave it out.
    Note,
}

/// The kinds of problem a rule file can have. The code is stable: tests and users grep for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    Io,
    YamlSyntax,
    UnknownKey,
    MissingKey,
    WrongType,
    UnknownVariant,
    InvalidName,
    ReservedName,
    DuplicateRule,
    BadRegex,
    UnknownPattern,
    /// Grok patterns that use each other in a cycle.
    PatternCycle,
    UndefinedField,
    MetricConflict,
    BadBuckets,
    BadQuantile,
    BadDuration,
    UnitMismatch,
    TooManyLabels,
    BadLimit,
    GaugeModeConflict,
    BadJsonPath,
    SlowPattern,
    BadExpectation,
    TestFile,
    CounterName,
    DefaultBuckets,
    SharedMetric,
    DuplicateKey,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::YamlSyntax => "yaml-syntax",
            Code::UnknownKey => "unknown-key",
            Code::MissingKey => "missing-key",
            Code::WrongType => "wrong-type",
            Code::UnknownVariant => "unknown-variant",
            Code::InvalidName => "invalid-name",
            Code::ReservedName => "reserved-name",
            Code::DuplicateRule => "duplicate-rule",
            Code::BadRegex => "bad-regex",
            Code::UnknownPattern => "unknown-pattern",
            Code::PatternCycle => "pattern-cycle",
            Code::UndefinedField => "undefined-field",
            Code::MetricConflict => "metric-conflict",
            Code::BadBuckets => "bad-buckets",
            Code::BadQuantile => "bad-quantile",
            Code::BadDuration => "bad-duration",
            Code::UnitMismatch => "unit-mismatch",
            Code::TooManyLabels => "too-many-labels",
            Code::BadLimit => "bad-limit",
            Code::GaugeModeConflict => "gauge-mode-conflict",
            Code::BadJsonPath => "bad-json-path",
            Code::SlowPattern => "slow-pattern",
            Code::BadExpectation => "bad-expectation",
            Code::TestFile => "test-file",
            Code::CounterName => "counter-name",
            Code::DefaultBuckets => "default-buckets",
            Code::SharedMetric => "shared-metric",
            Code::DuplicateKey => "duplicate-key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: Arc<str>,
    pub pos: Pos,
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn is_note(&self) -> bool {
        self.severity == Severity::Note
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.pos.line,
            self.pos.col,
            sev,
            self.code.as_str(),
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink {
    file: Arc<str>,
    pub diags: Vec<Diagnostic>,
}

impl Sink {
    pub fn new(file: Arc<str>) -> Sink {
        Sink {
            file,
            diags: Vec::new(),
        }
    }

    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub fn error(&mut self, pos: Pos, code: Code, message: impl Into<String>) -> &mut Diagnostic {
        self.push(pos, Severity::Error, code, message)
    }

    pub fn warning(&mut self, pos: Pos, code: Code, message: impl Into<String>) -> &mut Diagnostic {
        self.push(pos, Severity::Warning, code, message)
    }

    pub fn note(&mut self, pos: Pos, code: Code, message: impl Into<String>) -> &mut Diagnostic {
        self.push(pos, Severity::Note, code, message)
    }

    fn push(
        &mut self,
        pos: Pos,
        severity: Severity,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            pos,
            severity,
            code,
            message: message.into(),
            hint: None,
        });
        self.diags.last_mut().expect("just pushed")
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

impl Diagnostic {
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(&mut self, hint: Option<String>) -> &mut Diagnostic {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}
