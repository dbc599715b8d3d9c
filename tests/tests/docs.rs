//! The documentation as a book whose links hold: every relative link of the README, the
//! changelog, the book (`docs/`) and the step author's guide (`sdk/README.md`) names a file of
//! the repository, and every anchor a heading of its target as GitHub names it; the book's
//! index links every page; and no page reads as a diary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use canup_tests::workspace_dir;

/// The Markdown files whose links are checked: the README, the changelog, every page of the
/// book and the step author's guide.
fn documents() -> Vec<PathBuf> {
    let root = workspace_dir();
    let mut docs = vec![root.join("README.md"), root.join("CHANGELOG.md"), root.join("sdk/README.md")];
    docs.extend(book_pages());
    docs
}

/// The `.md` files of `docs/`, sorted.
fn book_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(workspace_dir().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// The lines of a Markdown text outside fenced code blocks (```` ``` ```` or `~~~`, indented
/// or not), with their numbers; a line inside a block is given as empty, so that it still
/// ends a paragraph.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut fence: Option<(char, usize)> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let s = line.trim_start();
        let run = |c: char| s.chars().take_while(|&x| x == c).count();
        let marker = ['`', '~'].into_iter().find(|&c| run(c) >= 3);
        match (fence, marker) {
            (None, Some(c)) => {
                fence = Some((c, run(c)));
                out.push((i + 1, String::new()));
            }
            (Some((c, n)), Some(m)) if m == c && run(c) >= n && s[run(c)..].trim().is_empty() => {
                fence = None;
                out.push((i + 1, String::new()));
            }
            (Some(_), _) => out.push((i + 1, String::new())),
            (None, None) => out.push((i + 1, line.to_owned())),
        }
    }
    out
}

/// `text` with each inline code span replaced by the word `code`: what is between backticks
/// is never a link, and its words are not the page's prose.
fn without_code_spans(text: &str) -> String {
    text.split('`').enumerate().map(|(i, part)| if i % 2 == 0 { part } else { "code" }).collect()
}

/// The paragraphs of a Markdown text (runs of prose lines), each with the number of its first
/// line, inline code spans replaced.
fn paragraphs(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in prose_lines(text) {
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        if let Some((_, p)) = &mut current {
            p.push('\n');
            p.push_str(&line);
        } else {
            current = Some((n, line));
        }
    }
    out.extend(current);
    out.into_iter().map(|(n, p)| (n, without_code_spans(&p))).collect()
}

/// The destinations of the links of a Markdown text, each with the line it is on: inline
/// links and images (`[text](dest)`, `[text](dest "title")`, `[text](<dest>)`) and reference
/// definitions (`[label]: dest`), outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (first, p) in paragraphs(text) {
        for (at, _) in p.match_indices("](") {
            let line = first + p[..at].matches('\n').count();
            let rest = &p[at + 2..];
            let dest = if let Some(angled) = rest.strip_prefix('<') {
                angled.split('>').next().unwrap_or_default().to_owned()
            } else {
                // Up to the closing parenthesis (balanced ones belong to the destination) or
                // the space before a title.
                let mut depth = 0usize;
                let mut end = rest.len();
                for (i, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => {
                            end = i;
                            break;
                        }
                        ')' => depth -= 1,
                        c if c.is_whitespace() => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                rest[..end].to_owned()
            };
            out.push((line, dest));
        }
        for (i, l) in p.lines().enumerate() {
            let l = l.trim_start();
            if let Some(close) = l.strip_prefix('[').and_then(|r| r.find("]:")) {
                let dest = l[close + 3..].split_whitespace().next().unwrap_or_default();
                if !dest.is_empty() {
                    out.push((first + i, dest.trim_start_matches('<').trim_end_matches('>').to_owned()));
                }
            }
        }
    }
    out
}

/// The anchor GitHub gives a heading's text: lower case; letters, digits, `_`, `-` and spaces
/// kept, every other character (punctuation, backticks, dots, parentheses, slashes, symbols)
/// dropped; each space a `-`. Links in the heading count by their text.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading.trim();
    // `[text](dest)` reads as `text`.
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else { break };
        let Some(close) = rest[open + mid..].find(')') else { break };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.to_lowercase().chars().filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ').map(|c| if c == ' ' { '-' } else { c }).collect()
}

/// The anchors of a Markdown text's headings (ATX: `#` to `######`), in order; a repeated one
/// gets `-1`, `-2`… as GitHub gives it.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let s = line.trim_start();
        let level = s.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&level) || line.len() - s.len() > 3 {
            continue;
        }
        let rest = &s[level..];
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        // A closing sequence of `#` is not part of the heading.
        let rest = rest.trim();
        let rest = match rest.trim_end_matches('#') {
            r if r.len() < rest.len() && (r.is_empty() || r.ends_with(' ')) => r,
            _ => rest,
        };
        let base = slug(rest);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
        *n += 1;
        out.insert(anchor);
    }
    out
}

fn is_external(dest: &str) -> bool {
    ["http://", "https://", "mailto:"].iter().any(|scheme| dest.starts_with(scheme))
}

/// What is wrong with `dest`, a link of `file`, if anything; `None` when it resolves.
fn broken(file: &Path, dest: &str) -> Option<String> {
    let root = workspace_dir();
    let (path, anchor) = match dest.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (dest, None),
    };
    let target = if path.is_empty() { file.to_path_buf() } else { file.parent().unwrap().join(path) };
    let Ok(target) = target.canonicalize() else {
        return Some(format!("{} does not exist", target.display()));
    };
    if !target.starts_with(&root) {
        return Some(format!("{} is outside the repository (a fresh clone lacks it)", target.display()));
    }
    let anchor = anchor?;
    if target.extension().is_none_or(|e| e != "md") {
        return Some(format!("an anchor into {}, which is not Markdown", target.display()));
    }
    let headings = anchors(&std::fs::read_to_string(&target).unwrap());
    (!headings.contains(anchor)).then(|| format!("{} has no heading with the anchor #{anchor}; its anchors: {headings:?}", target.display()))
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let root = workspace_dir();
    let (mut checked, mut with_anchor, mut problems) = (0, 0, Vec::new());
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (line, dest) in links(&text) {
            if is_external(&dest) {
                continue;
            }
            checked += 1;
            with_anchor += usize::from(dest.contains('#'));
            if let Some(why) = broken(&file, &dest) {
                problems.push(format!("{}:{line}: ({dest}): {why}", file.strip_prefix(&root).unwrap_or(&file).display()));
            }
        }
    }
    assert!(problems.is_empty(), "{} broken links:\n{}", problems.len(), problems.join("\n"));
    // A reader that finds no link would pass the test above whatever the pages hold.
    assert!(checked > 50, "only {checked} relative links found in {:?}", documents());
    assert!(with_anchor > 20, "only {with_anchor} links with an anchor found");
}

#[test]
fn the_book_index_links_every_page_of_docs_and_the_readme_links_the_index() {
    let root = workspace_dir();
    let index = root.join("docs/README.md");
    let linked: BTreeSet<PathBuf> = links(&std::fs::read_to_string(&index).unwrap())
        .into_iter()
        .filter(|(_, d)| !is_external(d))
        .filter_map(|(_, d)| index.parent().unwrap().join(d.split('#').next().unwrap()).canonicalize().ok())
        .collect();
    let mut wanted: Vec<PathBuf> = book_pages().into_iter().filter(|p| p != &index).collect();
    wanted.extend([root.join("sdk/README.md"), root.join("CHANGELOG.md")]);
    let missing: Vec<String> = wanted
        .iter()
        .map(|p| p.canonicalize().unwrap())
        .filter(|p| !linked.contains(p))
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "docs/README.md, the book's index, does not link {missing:?}");
    assert!(wanted.len() >= 10, "the book has {} pages: {wanted:?}", wanted.len());

    let readme = links(&std::fs::read_to_string(root.join("README.md")).unwrap());
    assert!(readme.iter().any(|(_, d)| d == "docs/README.md"), "the README links the book's index: {readme:?}");
}

/// Words of a lab diary: what is true is stated as true, with the command that shows it.
const DIARY: &[&str] = &["this session", "that session", "the session", "last session", "we then", "previously", "so far", "until now", "for now", "now"];

#[test]
fn no_page_of_the_docs_reads_as_a_diary() {
    let root = workspace_dir();
    let mut found = Vec::new();
    // The changelog is the one page that tells what changed.
    for file in documents().into_iter().filter(|f| !f.ends_with("CHANGELOG.md")) {
        for (line, p) in paragraphs(&std::fs::read_to_string(&file).unwrap()) {
            let lower = p.to_lowercase();
            for word in DIARY {
                for (at, _) in lower.match_indices(word) {
                    let before = lower[..at].chars().next_back();
                    let after = lower[at + word.len()..].chars().next();
                    if before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric()) {
                        let line = line + lower[..at].matches('\n').count();
                        found.push(format!("{}:{line}: {word:?}", file.strip_prefix(&root).unwrap_or(&file).display()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "diary words in the docs:\n{}", found.join("\n"));
}

#[test]
fn headings_get_githubs_anchors() {
    assert_eq!(slug("Install (RPM)"), "install-rpm");
    assert_eq!(slug("The manifest (`step.toml` beside `Cargo.toml`)"), "the-manifest-steptoml-beside-cargotoml");
    assert_eq!(slug("Rotating a role's keys"), "rotating-a-roles-keys");
    assert_eq!(slug("Offline root: several holders sign one after the other"), "offline-root-several-holders-sign-one-after-the-other");
    assert_eq!(slug("The index (`index.json`)"), "the-index-indexjson");
    assert_eq!(slug("canup's own commands: backups and rollback"), "canups-own-commands-backups-and-rollback");
    assert_eq!(slug("Plan 3.38.0 → 3.40.0 with the_api"), "plan-3380--3400-with-the_api");
    assert_eq!(slug("See [the guide](guide.md) first"), "see-the-guide-first");
    let text = "# Title\n## Steps\n```sh\n# not a heading\n```\n## Steps\n### Steps ###\n####### seven\n";
    let a: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(a, ["steps", "steps-1", "steps-2", "title"]);
}

#[test]
fn links_are_read_outside_code_only() {
    let text = "See [a](a.md#x) and `[b](b.md)`,\n[c\ntext](c.md \"title\") ![i](<i.png>).\n\n```md\n[d](d.md)\n```\n[e]: e.md\n[f](https://f.example)";
    let found: Vec<(usize, String)> = links(text);
    let dests: Vec<&str> = found.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(dests, ["a.md#x", "c.md", "i.png", "https://f.example", "e.md"]);
    assert_eq!((found[1].0, found[3].0, found[4].0), (3, 9, 8), "each destination on its line: {found:?}");
}
