//! How steps reach the operator: logs, progress, confirmations and manual instructions.

use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Text that comes from a step, made safe to show on a terminal: every control character but
/// newline and tab is written as a visible escape (`\x1b`, `\u{9b}`), so that a step cannot
/// move the cursor, clear the screen, redraw a question or paint a fake "ok". What the step
/// said is kept as is in the audit log.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !hidden(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// At most `max` bytes of `text` (cut on a character boundary), with a note of how much was
/// left out: every text a step controls (a message, a listing line, an argument, its error)
/// reaches the terminal and the files canup keeps through this bound.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{} … ({} more bytes not shown)", &text[..end], text.len() - end))
}

/// At most about `max` bytes of `text`: its start and its end (where an error says why), with
/// a count of what was left out between them.
pub fn cut_middle(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let (mut head, mut tail) = (max / 2, text.len() - max / 2);
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    std::borrow::Cow::Owned(format!("{} … ({} more bytes not shown) … {}", &text[..head], tail - head, &text[tail..]))
}

pub trait Ui: Send + Sync {
    fn log(&self, step: &str, level: Level, message: &str);
    fn progress(&self, step: &str, done: u64, total: Option<u64>, message: &str);
    /// A yes/no question; `false` when nobody can answer.
    fn confirm(&self, step: &str, question: &str) -> bool;
    /// An instruction to carry out by hand; `true` once the operator says it is done.
    fn manual(&self, step: &str, instruction: &str) -> bool;
    /// The operator's choice among `options` for an optional action; `None` when nobody can
    /// be asked (no terminal, or `--yes`): the step then gets its default, never a "yes".
    fn choose(&self, _step: &str, _question: &str, _options: &[String], _default: usize) -> Option<usize> {
        None
    }
}

/// The terminal: messages on stderr, answers from stdin when it is a terminal.
///
/// Without a terminal nobody can answer, so a confirmation is refused unless `assume_yes`
/// and a manual instruction stops the step unless `accept_manual`: an unattended run must
/// never skip a manual action silently.
#[derive(Debug, Clone, Default)]
pub struct ConsoleUi {
    pub assume_yes: bool,
    pub accept_manual: bool,
    pub min_level: Option<Level>,
}

impl ConsoleUi {
    fn ask(&self, prompt: &str) -> Option<String> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim().to_owned())
    }
}

impl Ui for ConsoleUi {
    fn log(&self, step: &str, level: Level, message: &str) {
        if level >= self.min_level.unwrap_or(Level::Info) {
            eprintln!("  [{step}] {level:?}: {message}");
        }
    }

    fn progress(&self, step: &str, done: u64, total: Option<u64>, message: &str) {
        match total {
            Some(t) => eprintln!("  [{step}] {done}/{t} {message}"),
            None => eprintln!("  [{step}] {done} {message}"),
        }
    }

    fn confirm(&self, step: &str, question: &str) -> bool {
        if self.assume_yes {
            eprintln!("  [{step}] {question} yes (--yes)");
            return true;
        }
        matches!(self.ask(&format!("  [{step}] {question} [y/N] ")).as_deref(), Some("y" | "Y" | "yes"))
    }

    fn manual(&self, step: &str, instruction: &str) -> bool {
        eprintln!("  [{step}] MANUAL ACTION REQUIRED:\n{instruction}");
        if self.accept_manual {
            eprintln!("  [{step}] accepted as done (--accept-manual)");
            return true;
        }
        matches!(self.ask(&format!("  [{step}] Type 'done' once carried out: ")).as_deref(), Some("done"))
    }

    fn choose(&self, step: &str, question: &str, options: &[String], default: usize) -> Option<usize> {
        // `--yes` confirms the plan and the steps' own work, not what a release note calls
        // optional: that needs an answer, here or in `[answers]`.
        if self.assume_yes {
            return None;
        }
        let listed: Vec<String> = options.iter().enumerate().map(|(i, o)| format!("{}) {o}{}", i + 1, if i == default { " (default)" } else { "" })).collect();
        let answer = self.ask(&format!("  [{step}] {question}\n    {}\n  choice [{}]: ", listed.join("\n    "), default + 1))?;
        if answer.is_empty() {
            return Some(default);
        }
        answer.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).or_else(|| options.iter().position(|o| o == &answer)).filter(|i| *i < options.len())
    }
}
