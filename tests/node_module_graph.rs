//! The shape rules of the composed node (README, "Map of src/node"): no import cycle
//! among the modules of `src/node`, and no source file over 700 lines in `src/` or
//! `behaviours/*/src`. Read from the sources, the way a reviewer would check them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its `#[cfg(test)] mod tests` (tests may import anything).
fn non_test_code(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The sibling modules of `src/node` that `code` names through `prefix` (`super::`,
/// `super::super::`, `crate::node::`), plain or in a `{a, b::C}` group.
fn named_through(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + prefix.len()..];
        rest = after;
        // `super::super::x` seen through `super::` is the deeper prefix's business.
        if before.is_some_and(|c| is_ident_char(c) || c == ':') || after.starts_with("super::") {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut first = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if first && !item.is_empty() {
                            found.insert(std::mem::take(&mut item));
                        }
                        first = true;
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && first {
                    if is_ident_char(c) {
                        item.push(c);
                    } else if !item.is_empty() {
                        found.insert(std::mem::take(&mut item));
                        first = false;
                    }
                }
            }
            if first && !item.is_empty() {
                found.insert(item);
            }
        } else {
            let name: String = after.chars().take_while(|c| is_ident_char(*c)).collect();
            found.insert(name);
        }
    }
    found
}

/// Module → the sibling modules it imports.
fn node_module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        let top = parts[0].clone();
        // Tests (`*tests.rs`, anything under a `tests/` directory) may import anything.
        if top == "mod" || parts.iter().any(|p| p.ends_with("tests")) {
            continue;
        }
        let src = std::fs::read_to_string(file).unwrap();
        let code = non_test_code(&src);
        let up = "super::".repeat(parts.len());
        let mut uses = named_through(code, &up);
        uses.extend(named_through(code, "crate::node::"));
        uses.remove(&top);
        graph.entry(top).or_default().extend(uses);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// One cycle of `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_of_src_node_import_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/node");
    let graph = node_module_graph(&root);
    // The reader sees the imports it must (or the check would pass on nothing).
    assert!(
        graph["router"].contains("ip_scope"),
        "{:?}",
        graph["router"]
    );
    assert!(graph["own"].contains("action"), "{:?}", graph["own"]);
    assert!(graph["waiting"].contains("api"), "{:?}", graph["waiting"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle among src/node's modules: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let code_a = "use super::b::X;\nuse crate::node::{c, d::Y};";
    assert_eq!(
        named_through(code_a, "super::"),
        BTreeSet::from(["b".to_owned()])
    );
    assert_eq!(
        named_through(code_a, "crate::node::"),
        BTreeSet::from(["c".to_owned(), "d".to_owned()])
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
}

#[test]
fn no_source_file_is_over_700_lines() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&manifest.join("src"), &mut files);
    for entry in std::fs::read_dir(manifest.join("behaviours")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 100, "{} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn node_keeps_at_most_40_methods() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/node");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut methods = Vec::new();
    for file in &files {
        let src = std::fs::read_to_string(file).unwrap();
        let mut inside = false;
        for line in src.lines() {
            if line == "impl Node {" {
                inside = true;
            } else if inside && line == "}" {
                inside = false;
            } else if inside {
                let l = line.trim_start();
                let indent = line.len() - l.len();
                let l = l
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ")
                    .trim_start_matches("async ");
                if indent == 4 && l.starts_with("fn ") {
                    methods.push(l.to_owned());
                }
            }
        }
    }
    assert!(methods.len() >= 10, "the reader found {methods:?}");
    assert!(
        methods.len() <= 40,
        "impl Node holds {} methods: {methods:#?}",
        methods.len()
    );
}
