//! The host's layout keeps explaining itself: its top-level modules depend on each other
//! without a circle (a layer below never reaches one above), and no file grows past what a
//! reader takes in at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a host source file holds before its tests (`#[cfg(test)]`).
const MAX_LINES: usize = 500;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn host_src() -> PathBuf {
    canup_tests::workspace_dir().join("host/src")
}

/// A file's code before its test module, without comment lines.
fn code(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).filter(|l| !l.trim_start().starts_with("//")).map(str::to_owned).collect()
}

/// The library's top-level module a file belongs to (`capabilities` for
/// `capabilities/fs/mod.rs`); `None` for the crate root and the binary (`cli/`, `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?.as_os_str().to_string_lossy().into_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" | "cli" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// Top-level module → the top-level modules its code names through `crate::`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = host_src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let Some(from) = module_of(&src, file) else { continue };
        for line in code(file) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name != from && modules.contains(&name) {
                    graph.entry(from.clone()).or_default().insert(name);
                }
            }
        }
    }
    graph
}

/// A path from `to` back to `from` in `graph`, if any (depth first).
fn path_back(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![to.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().cloned().unwrap_or_default();
        if last == from {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in graph.get(&last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

#[test]
fn no_import_circle_between_the_hosts_top_level_modules() {
    let graph = dependencies();
    assert!(graph.len() > 15, "the host's modules were found: {graph:?}");
    assert!(graph["upgrade"].contains("sandbox") && graph["sandbox"].contains("capabilities"), "dependencies are read: {graph:?}");
    let g = &graph;
    let circles: Vec<String> = graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().filter_map(move |to| path_back(g, from, to).map(|back| format!("{from} -> {}", back.join(" -> ")))))
        .collect();
    assert!(circles.is_empty(), "import circles between host modules:\n  {}", circles.join("\n  "));
}

#[test]
fn no_host_file_is_longer_than_500_lines_before_its_tests() {
    let mut files = Vec::new();
    sources(&host_src(), &mut files);
    assert!(files.len() > 40, "host sources found: {}", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "host files over {MAX_LINES} lines before their tests: split them by concept:\n  {}", long.join("\n  "));
}
