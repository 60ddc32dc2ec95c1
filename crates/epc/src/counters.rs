//! Counters for operators, in one text format whatever their source: one line per source (or
//! per queue, per queue pair), `name: key=value key=value ...`. The command writes them to
//! `--stats-file` and, on SIGUSR1, to stderr; tests and scripts find a value by the line's
//! name and the key.
//!
//! A source implements [`CounterSource`]: it reads its counters (usually relaxed atomics
//! another thread bumps) and writes its lines through [`Counters::line`]. Sources are read
//! from any thread while the function runs, never from the thread doing the work.

use std::fmt::{Display, Write as _};

/// Something whose counters an operator can read while it runs.
pub trait CounterSource: Send + Sync {
    /// Writes this source's lines to `out`.
    fn report(&self, out: &mut Counters);
}

/// The counters of any number of sources, as text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    text: String,
}

impl Counters {
    /// No lines yet.
    pub fn new() -> Self {
        Counters::default()
    }

    /// Adds `source`'s lines.
    pub fn add(&mut self, source: &(impl CounterSource + ?Sized)) -> &mut Self {
        source.report(self);
        self
    }

    /// Starts a line called `name`; its fields follow with [`Line::field`], and the line ends
    /// when the returned value is dropped.
    pub fn line(&mut self, name: impl Display) -> Line<'_> {
        let _ = write!(self.text, "{name}:");
        Line {
            text: &mut self.text,
        }
    }

    /// The lines, each ending in a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The lines, each ending in a newline.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// One line being written.
pub struct Line<'a> {
    text: &'a mut String,
}

impl Line<'_> {
    /// Appends ` key=value`.
    pub fn field(&mut self, key: &str, value: impl Display) -> &mut Self {
        let _ = write!(self.text, " {key}={value}");
        self
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        self.text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair(u64, &'static str);

    impl CounterSource for Pair {
        fn report(&self, out: &mut Counters) {
            out.line("pair").field("n", self.0).field("name", self.1);
            for i in 0..2 {
                out.line(format_args!("pair {i}")).field("i", i);
            }
        }
    }

    #[test]
    fn lines_of_named_fields() {
        let mut c = Counters::new();
        c.add(&Pair(7, "x"))
            .add(&Pair(8, "y") as &dyn CounterSource);
        c.line("empty");
        assert_eq!(
            c.text(),
            "pair: n=7 name=x\npair 0: i=0\npair 1: i=1\n\
             pair: n=8 name=y\npair 0: i=0\npair 1: i=1\nempty:\n"
        );
    }
}
