//! Diagnostic builders: `Diagnostic::error("secrets.github-token", "…").at("deploy/app.yaml", 12)`.

use crate::{Diagnostic, Location, Severity};

impl Diagnostic {
    pub fn new(severity: Severity, code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            code: code.into(),
            message: message.into(),
            location: None,
            hint: None,
        }
    }

    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, code, message)
    }

    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, code, message)
    }

    pub fn info(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Info, code, message)
    }

    /// Sets the location: `path` relative to `/work` (use [`crate::display_path`]), 1-based `line` or `None`.
    pub fn at(mut self, path: impl Into<String>, line: impl Into<Option<u32>>) -> Diagnostic {
        let column = self.location.as_ref().and_then(|l| l.column);
        self.location = Some(Location {
            path: path.into(),
            line: line.into(),
            column,
        });
        self
    }

    /// Sets the 1-based column; needs a location set with [`Diagnostic::at`] first (ignored otherwise).
    pub fn with_column(mut self, column: u32) -> Diagnostic {
        if let Some(loc) = self.location.as_mut() {
            loc.column = Some(column);
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Whether any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// 1-based line and column (in bytes) of `offset` in `text`.
pub fn line_col(text: &[u8], offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (saturate(line), saturate(col))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder() {
        let d = Diagnostic::error("x.y", "msg")
            .at("a/b.yaml", 3)
            .with_column(7)
            .with_hint("fix it");
        assert!(d.is_error());
        let loc = d.location.clone().unwrap();
        assert_eq!(
            (loc.path.as_str(), loc.line, loc.column),
            ("a/b.yaml", Some(3), Some(7))
        );
        assert_eq!(d.hint.as_deref(), Some("fix it"));
        let d = Diagnostic::info("i", "m").at("p", None);
        assert_eq!(d.location.unwrap().line, None);
        assert!(!has_errors(&[Diagnostic::warning("w", "m")]));
    }

    #[test]
    fn line_and_column() {
        let t = b"ab\ncd\nefg";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (2, 2));
        assert_eq!(line_col(t, 8), (3, 3));
        assert_eq!(line_col(t, 100), (3, 4));
    }
}
