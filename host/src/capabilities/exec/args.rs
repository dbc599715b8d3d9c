//! Argument patterns: how an exec rule's `args` match a command's arguments, and when one
//! rule's patterns cover another's (admission at plan time).
//!
//! Why options are special: most programs a Canopsis procedure runs are as powerful as a
//! shell through one option (`rpm --eval=%(sh)`, `yum --setopt=…`, `mongo --eval`,
//! `systemctl --root`). So a pattern lets an option (an argument starting with `-`) through
//! only when the pattern itself starts with `-`: `*` and `**` never match one.
//!
//! Why paths are special too: a package manager takes an argument with a `/` as a local file
//! (`yum update canopsis-core-1/../../tmp/evil.rpm` installs that file), so a pattern matches
//! an argument holding a `/` only when the pattern itself holds one (`mongodb://*` does).
//!
//! - A pattern is a glob (`*` any text, `?`, `[…]`; `[*]` a literal star) or alternatives
//!   `canopsis-core|canopsis-cat`; an argument equal to the pattern's text always matches, so
//!   a literal script needs no escaping.
//! - `**` as the last pattern: any number of further arguments, none of them an option.
//! - `P...` as the last pattern: one or more further arguments, each matching `P` (a package
//!   update names every installed Canopsis package, pinned: `canopsis*-[0-9]*...`).
//! - With `shell = true`, the rule's last pattern is a command line that a shell will read
//!   (`su - canopsis -c "canopsinit …"`): the argument must hold no shell syntax at all (no
//!   `;`, `|`, `&`, `$`, quotes, redirections, globs, newlines …) and is matched word by word,
//!   split on blanks as the shell will split it, by the same rules.

use globset::GlobMatcher;

use super::super::{PatternError, glob};

/// Characters a shell gives a meaning to. An argument that a shell reads and holds one of
/// them is refused, whatever the patterns say: only plain words reach the shell.
const SHELL_SYNTAX: &[char] =
    &[';', '|', '&', '$', '`', '\\', '"', '\'', '<', '>', '(', ')', '{', '}', '[', ']', '*', '?', '~', '#', '!', '\n', '\r', '\0', '='];

#[derive(Debug, Clone)]
enum Word {
    One { text: String, alternatives: Vec<GlobMatcher> },
    Rest,
    Repeat(Box<Word>),
}

/// The suffix that makes a rule's last pattern match one or more arguments.
const REPEAT: &str = "...";

/// `P` of a last pattern `P...`.
fn repeated(pattern: &str) -> Option<&str> {
    pattern.strip_suffix(REPEAT).filter(|p| !p.is_empty())
}

impl Word {
    fn compile(pattern: &str, last: bool, origin: &str) -> Result<Self, PatternError> {
        if pattern == "**" && last {
            return Ok(Word::Rest);
        }
        if let Some(each) = repeated(pattern).filter(|_| last) {
            return Ok(Word::Repeat(Box::new(Word::compile(each, false, origin)?)));
        }
        let alternatives = split_alternatives(pattern).into_iter().map(|a| glob(a, false, origin)).collect::<Result<Vec<_>, _>>()?;
        Ok(Word::One { text: pattern.to_owned(), alternatives })
    }

    fn matches(&self, arg: &str) -> bool {
        match self {
            Word::Rest => !arg.starts_with('-'),
            Word::Repeat(each) => each.matches(arg),
            Word::One { text, alternatives } => {
                arg == text
                    || alternatives.iter().any(|g| {
                        let pattern = g.glob().glob();
                        (pattern.starts_with('-') || !arg.starts_with('-')) && (pattern.contains('/') || !arg.contains('/')) && g.is_match(arg)
                    })
            }
        }
    }
}

/// `a|b|c`, with `|` inside `[…]` taken literally.
fn split_alternatives(pattern: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pattern[start..]);
    parts
}

fn words_match(patterns: &[Word], args: &[&str]) -> bool {
    for (i, pattern) in patterns.iter().enumerate() {
        match pattern {
            Word::Rest => return args[i.min(args.len())..].iter().all(|a| pattern.matches(a)),
            Word::Repeat(_) => return args.len() > i && args[i..].iter().all(|a| pattern.matches(a)),
            Word::One { .. } => match args.get(i) {
                Some(a) if pattern.matches(a) => {}
                _ => return false,
            },
        }
    }
    args.len() == patterns.len()
}

/// The words a shell would split a plain command line into, or `None` when the line holds
/// shell syntax.
fn shell_words(line: &str) -> Option<Vec<&str>> {
    if line.contains(SHELL_SYNTAX) {
        return None;
    }
    Some(line.split([' ', '\t']).filter(|w| !w.is_empty()).collect())
}

/// A rule's argument patterns, compiled.
#[derive(Debug, Clone)]
pub(crate) struct ArgPatterns {
    words: Vec<Word>,
    /// The last argument's words, when it is a command line for a shell.
    shell: Option<Vec<Word>>,
}

impl ArgPatterns {
    pub(crate) fn compile(args: &[String], shell: bool, origin: &str) -> Result<Self, PatternError> {
        let compile_all = |patterns: &[&str]| -> Result<Vec<Word>, PatternError> {
            let last = patterns.len().saturating_sub(1);
            patterns.iter().enumerate().map(|(i, p)| Word::compile(p, i == last, origin)).collect()
        };
        match (shell, args.split_last()) {
            (true, Some((line, before))) => {
                let before: Vec<&str> = before.iter().map(String::as_str).collect();
                let line_words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
                Ok(Self { words: compile_all(&before)?, shell: Some(compile_all(&line_words)?) })
            }
            _ => Ok(Self { words: compile_all(&args.iter().map(String::as_str).collect::<Vec<_>>())?, shell: None }),
        }
    }

    pub(crate) fn matches(&self, args: &[String]) -> bool {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match &self.shell {
            None => words_match(&self.words, &args),
            Some(line) => match args.split_last() {
                Some((last, before)) => words_match(&self.words, before) && shell_words(last).is_some_and(|w| words_match(line, &w)),
                None => false,
            },
        }
    }
}

/// Whether the policy's patterns admit every command the declared patterns admit
/// (admission at plan time; the per-call check stays authoritative).
pub(crate) fn covers(policy: &[String], policy_shell: bool, declared: &[String]) -> bool {
    if !policy_shell {
        return words_cover(policy, declared);
    }
    // The declared last argument is read by the policy's shell: plain words only (the glob
    // characters and `|` of the declaration's own patterns aside).
    let Some(line) = declared.last() else { return false };
    if line.contains(|c: char| SHELL_SYNTAX.contains(&c) && !"*?[]|".contains(c)) {
        return false;
    }
    let words = |args: &[String]| -> Vec<String> {
        let mut out = args[..args.len() - 1].to_vec();
        out.extend(args[args.len() - 1].split([' ', '\t']).filter(|w| !w.is_empty()).map(str::to_owned));
        out
    };
    !policy.is_empty() && words_cover(&words(policy), &words(declared))
}

fn words_cover(policy: &[String], declared: &[String]) -> bool {
    for (i, p) in policy.iter().enumerate() {
        if p == "**" && i == policy.len() - 1 {
            // Further arguments: none of the declared ones may be an option.
            return declared[i.min(declared.len())..].iter().all(|d| d == "**" || split_alternatives(d).iter().all(|a| !a.starts_with('-')));
        }
        let last = i == policy.len() - 1;
        if let Some(each) = repeated(p).filter(|_| last) {
            // One or more further arguments: each declared one (or the declaration's own
            // repeated pattern) within `each`.
            let rest = &declared[i.min(declared.len())..];
            return !rest.is_empty()
                && rest.iter().enumerate().all(|(j, d)| {
                    let d = if j == rest.len() - 1 { repeated(d).unwrap_or(d) } else { d };
                    d != "**" && word_covers(each, d)
                });
        }
        match declared.get(i) {
            // A declared `P...` is any number of arguments: no single policy word covers it.
            Some(d) if d != "**" && !(i == declared.len() - 1 && repeated(d).is_some()) && word_covers(p, d) => {}
            _ => return false,
        }
    }
    policy.len() == declared.len()
}

fn word_covers(policy: &str, declared: &str) -> bool {
    if policy == declared {
        return true;
    }
    let policy_alternatives = split_alternatives(policy);
    split_alternatives(declared)
        .iter()
        .all(|d| policy_alternatives.iter().any(|p| (p.starts_with('-') || !d.starts_with('-')) && super::super::pattern_covers(p, d, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(args: &[&str], shell: bool) -> ArgPatterns {
        ArgPatterns::compile(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), shell, "test").unwrap()
    }

    fn m(p: &ArgPatterns, args: &[&str]) -> bool {
        p.matches(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_repeated_pattern_matches_one_or_more_arguments_each_within_it() {
        let update = pats(&["update", "-y", "canopsis*-[0-9]*..."], false);
        assert!(m(&update, &["update", "-y", "canopsis-core-4.5.5"]));
        assert!(m(&update, &["update", "-y", "canopsis-core-4.5.5", "canopsis-engines-go-4.5.5", "canopsis-webui-4.5.5"]));
        assert!(!m(&update, &["update", "-y"]), "at least one");
        assert!(!m(&update, &["update", "-y", "canopsis-core-4.5.5", "nginx"]));
        assert!(!m(&update, &["update", "-y", "canopsis-core-4.5.5", "--setopt=x"]));
        assert!(!m(&update, &["update", "-y", "canopsis-core-4.5.5/../../tmp/evil.rpm"]));
        let policy = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(covers(&policy(&["update", "canopsis*..."]), false, &policy(&["update", "canopsis*-[0-9]*..."])));
        assert!(covers(&policy(&["update", "canopsis*..."]), false, &policy(&["update", "canopsis-core-*", "canopsis-cat-*"])));
        assert!(!covers(&policy(&["update", "canopsis*..."]), false, &policy(&["update"])));
        assert!(!covers(&policy(&["update", "canopsis*..."]), false, &policy(&["update", "**"])));
        assert!(!covers(&policy(&["update", "*"]), false, &policy(&["update", "canopsis*..."])), "one word does not cover many");
        assert!(!covers(&policy(&["update", "canopsis-core-*..."]), false, &policy(&["update", "canopsis*..."])));
    }

    #[test]
    fn a_star_never_lets_an_option_through() {
        let rpm = pats(&["-q", "*"], false);
        assert!(m(&rpm, &["-q", "canopsis-core"]));
        assert!(!m(&rpm, &["-q", "--eval=%(sh -c id)"]));
        assert!(!m(&rpm, &["-q", "-E"]));
        let rest = pats(&["update", "**"], false);
        assert!(m(&rest, &["update", "a", "b"]));
        assert!(!m(&rest, &["update", "a", "--setopt=x=y"]));
        let option = pats(&["--disablerepo=[*]", "-*"], false);
        assert!(m(&option, &["--disablerepo=*", "-y"]), "a pattern starting with '-' matches options");
    }

    #[test]
    fn a_star_never_lets_a_path_through_unless_the_pattern_is_one() {
        let yum = pats(&["update", "-y", "canopsis-core-*"], false);
        assert!(m(&yum, &["update", "-y", "canopsis-core-3.40.0"]));
        assert!(!m(&yum, &["update", "-y", "canopsis-core-1/../../tmp/evil.rpm"]));
        let mongo = pats(&["mongodb://*"], false);
        assert!(m(&mongo, &["mongodb://cpsmongo:canopsis@localhost:27017/canopsis"]));
    }

    #[test]
    fn alternatives() {
        let rpm = pats(&["-q", "canopsis-core|canopsis-cat"], false);
        assert!(m(&rpm, &["-q", "canopsis-core"]) && m(&rpm, &["-q", "canopsis-cat"]));
        assert!(!m(&rpm, &["-q", "canopsis-webui"]));
        assert!(m(&pats(&["a[|]b"], false), &["a|b"]), "'|' inside brackets is literal");
    }

    #[test]
    fn a_shell_command_line_is_matched_word_by_word_and_holds_no_shell_syntax() {
        let su = pats(&["-", "canopsis", "-c", "canopsinit --canopsis-edition core|cat"], true);
        assert!(m(&su, &["-", "canopsis", "-c", "canopsinit --canopsis-edition cat"]));
        assert!(m(&su, &["-", "canopsis", "-c", "canopsinit  --canopsis-edition\tcore"]));
        for line in [
            "canopsinit --canopsis-edition cat; id",
            "canopsinit --canopsis-edition cat | sh",
            "canopsinit --canopsis-edition $(id)",
            "canopsinit --canopsis-edition `id`",
            "canopsinit --canopsis-edition cat && curl x",
            "canopsinit --canopsis-edition cat > /etc/passwd",
            "canopsinit --canopsis-edition cat\nid",
            "canopsinit --canopsis-edition cat --extra",
            "canopsinit --canopsis-edition 'cat'",
        ] {
            assert!(!m(&su, &["-", "canopsis", "-c", line]), "{line:?}");
        }
    }

    #[test]
    fn coverage_follows_the_same_rules() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(covers(&s(&["-q", "canopsis-core|canopsis-cat"]), false, &s(&["-q", "canopsis-core"])));
        assert!(!covers(&s(&["-q", "*"]), false, &s(&["-q", "--eval=x"])));
        assert!(!covers(&s(&["**"]), false, &s(&["--setopt=x"])));
        assert!(covers(&s(&["update", "**"]), false, &s(&["update", "canopsis-core-*"])));
        let su = s(&["-", "canopsis", "-c", "canopsinit --canopsis-edition core|cat"]);
        assert!(covers(&su, true, &s(&["-", "canopsis", "-c", "canopsinit --canopsis-edition cat"])));
        assert!(!covers(&su, true, &s(&["-", "canopsis", "-c", "canopsinit --canopsis-edition cat; id"])));
        assert!(!covers(&su, true, &s(&["-", "canopsis", "-c", "canopsinit **"])));
    }
}
