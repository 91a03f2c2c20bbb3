//! The modules of `connection` form layers: no module reaches, directly or
//! through others, back to itself (the graph is in the parent module's docs).
//! Checked on the sources, as `use` edges between sibling modules (comments and
//! test modules left out), so a new cycle fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The sibling modules each module of `connection` names outside its tests.
fn edges(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/connection") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            for sub in std::fs::read_dir(&path).expect("submodule") {
                files.push(sub.expect("entry").path());
            }
        } else {
            files.push(path);
        }
    }
    let module = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(dir).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first).to_string();
        Some(name).filter(|n| n != "mod")
    };
    let siblings: BTreeSet<String> = files.iter().filter_map(|p| module(p)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let Some(from) = module(path) else { continue };
        let text = std::fs::read_to_string(path).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for prefix in ["super::", "crate::connection::"] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let rest = rest.strip_prefix("super::").unwrap_or(rest);
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if name != from && siblings.contains(&name) {
                        graph.entry(from.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `node`, if there is one (depth-first search).
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        let mut c = path[at..].to_vec();
        c.push(node.to_string());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = cycle(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_modules_of_connection_have_no_import_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/connection");
    let graph = edges(&dir);
    // The check sees the edges that are there (guards against a parser that
    // finds nothing and so passes).
    assert!(graph["forward"].contains("tunnels"), "{graph:?}");
    assert!(graph["handler"].contains("login"), "{graph:?}");
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = cycle(&graph, node, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert!(cycle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new()).is_none());
    graph.entry("c".into()).or_default().insert("a".into());
    let c = cycle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(
        c.map(|c| c.join(" -> ")).as_deref(),
        Some("a -> b -> c -> a")
    );
}
