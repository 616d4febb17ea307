//! The manual cannot drift from the programs: every program and every
//! subcommand with options of its own has one flag table in docs/, and each
//! table lists exactly the options its `--help` shows, with the same
//! spellings, environment variables and defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use remsim_checks::{Opt, Table, compare, parse_help, parse_tables};
use remsim_testing::workspace_binary;

/// Every program the manual documents.
const PROGRAMS: [&str; 7] = [
    "remsim-server",
    "remsim-bankd",
    "remsim-client",
    "remsimctl",
    "remsim-vcard",
    "remsim-demo",
    "remsim-load",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `--help` of `path` (program and subcommands), with no REMSIM_* set.
fn help(path: &[String]) -> String {
    let mut cmd = Command::new(workspace_binary(&path[0]));
    cmd.args(&path[1..]).arg("--help");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REMSIM_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{path:?} --help: {e}"));
    assert!(out.status.success(), "{path:?} --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Each command path with its own options (those its parent does not show).
fn commands() -> BTreeMap<String, Vec<Opt>> {
    let mut found = BTreeMap::new();
    let mut todo: Vec<(Vec<String>, Vec<Opt>)> = PROGRAMS
        .iter()
        .map(|p| (vec![p.to_string()], Vec::new()))
        .collect();
    while let Some((path, parent)) = todo.pop() {
        let h = parse_help(&help(&path));
        let own: Vec<Opt> = h
            .options
            .iter()
            .filter(|o| !o.names.contains("--help"))
            .filter(|o| !parent.iter().any(|p| !p.names.is_disjoint(&o.names)))
            .cloned()
            .collect();
        for sub in h.commands.iter().filter(|c| *c != "help") {
            let mut next = path.clone();
            next.push(sub.clone());
            todo.push((next, h.options.clone()));
        }
        found.insert(path.join(" "), own);
    }
    found
}

fn manual_tables() -> Vec<Table> {
    let mut tables = Vec::new();
    let docs = repo().join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = format!(
            "docs/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        tables.extend(parse_tables(&name, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    tables
}

#[test]
fn flag_tables_match_help() {
    let commands = commands();
    assert!(
        commands.contains_key("remsimctl slotmap create"),
        "{:?}",
        commands.keys()
    );
    let tables = manual_tables();
    let mut problems = Vec::new();
    for table in &tables {
        match commands.get(&table.command) {
            None => problems.push(format!("{}: no command {:?}", table.place, table.command)),
            Some(own) => problems.extend(
                compare(own, table)
                    .into_iter()
                    .map(|p| format!("{}: {p}", table.place)),
            ),
        }
        if tables.iter().filter(|t| t.command == table.command).count() > 1 {
            problems.push(format!(
                "{}: a second table for {}",
                table.place, table.command
            ));
        }
    }
    for (command, own) in &commands {
        if !own.is_empty() && !tables.iter().any(|t| &t.command == command) {
            let keys: Vec<String> = own.iter().map(Opt::key).collect();
            problems.push(format!(
                "{command} has options ({}) but no flag table in docs/",
                keys.join(" ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the manual and --help differ:\n{}",
        problems.join("\n")
    );
}

/// Variables of the C suite's client units, which the migration chapter
/// shows carrying over.
const C_PACKAGING: [&str; 2] = ["REMSIM_I", "REMSIM_H"];

/// The REMSIM_* names in a text.
fn remsim_names(text: &str) -> Vec<String> {
    text.match_indices("REMSIM_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n.len() > "REMSIM_".len())
        .collect()
}

/// Every REMSIM_* variable the deployment files and the manual mention is
/// one that some program reads, one the client gives its event script, or
/// one of the C packaging's.
#[test]
fn environment_variables_named_anywhere_exist() {
    let known: std::collections::BTreeSet<String> = commands()
        .values()
        .flatten()
        .filter_map(|o| o.env.clone())
        .collect();
    let script = std::fs::read_to_string(repo().join("client/src/script.rs")).expect("script.rs");
    let mut script_vars: Vec<String> = remsim_names(&script);
    assert!(script_vars.contains(&"REMSIM_CAUSE".to_string()));
    // The PC/SC driver reads pcscd's environment, not options.
    let ifd = std::fs::read_to_string(repo().join("ifd/src/lib.rs")).expect("ifd/src/lib.rs");
    let ifd_vars = remsim_names(&ifd);
    assert!(ifd_vars.contains(&"REMSIM_IFD_APDU_TIMEOUT".to_string()));
    script_vars.extend(ifd_vars);
    let mut files = vec![repo().join("README.md")];
    for dir in [
        "docs",
        "deploy/systemd/default",
        "deploy/systemd",
        "deploy/kubernetes",
        "deploy/container",
    ] {
        for entry in std::fs::read_dir(repo().join(dir))
            .expect("folder")
            .flatten()
        {
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
    }
    let mut unknown = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for name in remsim_names(&text) {
            if !known.contains(&name)
                && !script_vars.contains(&name)
                && !C_PACKAGING.contains(&name.as_str())
            {
                unknown.push(format!("{}: {name}", file.display()));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "variables no program reads:\n{}",
        unknown.join("\n")
    );
}
