//! The mechanical claims of ARCHITECTURE.md, checked against the files: every path it names exists, only the
//! crates and modules it says talk to SQLite use `rusqlite`, `protocol` has no async runtime, and the crate
//! list under the picture in "Bird's eye view" is exactly the dependency graph of the Cargo.toml files.
//! Each check fails with what to fix, in the document or in the code. The files are read as text (Markdown
//! and Cargo.toml lines), so the checks need no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The document under check, relative to the repository root.
const ARCHITECTURE: &str = "ARCHITECTURE.md";

/// Endings that make a backticked name a path to check; anything else (`Store::open`, `meta.sqlite`) is not.
const PATH_ENDINGS: [&str; 6] = [".rs", ".md", ".sh", ".toml", ".yml", "/"];

/// Who may use SQLite, as ARCHITECTURE.md says it. Each entry quotes the sentence it encodes (compared with
/// the document's whitespace collapsed); when the document changes, change this list to match.
const SQLITE_USERS: [SqliteUser; 4] = [
    SqliteUser {
        crate_dir: "storage",
        quote: "Architecture invariant: only `meta.rs` (+ `meta/schema.rs`) talks to SQLite",
        only_modules: Some(&["meta.rs", "meta/schema.rs"]),
    },
    SqliteUser {
        crate_dir: "broker",
        quote: "`groups.rs`: committed offsets and pending refreshes in memory, written to `groups.sqlite`",
        only_modules: None,
    },
    SqliteUser {
        crate_dir: "registry",
        quote: "`db.rs`: the only module that talks to SQLite",
        only_modules: Some(&["db.rs"]),
    },
    SqliteUser {
        crate_dir: "consumer-app",
        quote: "`db.rs` (+ `db/history.rs`, `db/keys.rs`): the only module that talks to `app.sqlite`",
        only_modules: Some(&["db.rs", "db/history.rs", "db/keys.rs"]),
    },
];

/// The sentence of the `protocol/` section that `protocol_has_no_async_runtime` checks.
const PROTOCOL_QUOTE: &str = "Architecture invariant: no I/O, no async runtime.";

/// A crate ARCHITECTURE.md says talks to SQLite.
struct SqliteUser {
    /// The crate's directory under the root.
    crate_dir: &'static str,
    /// The sentence of ARCHITECTURE.md that says so.
    quote: &'static str,
    /// The only files under `src/` that may use `rusqlite`, when the document names them.
    only_modules: Option<&'static [&'static str]>,
}

/// What a Cargo.toml says about one workspace member.
#[derive(Debug)]
struct Manifest {
    /// The member's directory under the root.
    dir: String,
    /// Its package name.
    name: String,
    /// `[dependencies]` (and target-specific and build dependencies), by crate name.
    normal: BTreeSet<String>,
    /// `[dev-dependencies]`, by crate name.
    dev: BTreeSet<String>,
}

/// One crate's arrows: the crates of ours it depends on, and those only its tests use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Arrows {
    /// Normal dependencies.
    normal: BTreeSet<String>,
    /// Dev-dependencies that are not also normal dependencies.
    tests: BTreeSet<String>,
}

#[test]
fn every_path_the_document_names_exists() {
    let root = root();
    let members: Vec<String> = manifests().into_iter().map(|manifest| manifest.dir).collect();
    let mut missing = String::new();
    for name in named_paths(&read(&root.join(ARCHITECTURE))) {
        let candidates = name.candidates(&members);
        if !candidates.iter().any(|candidate| root.join(candidate).exists()) {
            let tried: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
            let _ = writeln!(
                missing,
                "  line {}: `{}` (section \"{}\"): none of {} exists",
                name.line,
                name.text,
                name.section,
                tried.join(", ")
            );
        }
    }
    assert!(
        missing.is_empty(),
        "{ARCHITECTURE} names files that do not exist; correct the name in the document (or restore the \
         file):\n{missing}"
    );
}

#[test]
fn rusqlite_is_a_dependency_only_of_the_crates_that_talk_to_sqlite() {
    let architecture = collapse_whitespace(&read(&root().join(ARCHITECTURE)));
    for user in &SQLITE_USERS {
        assert!(
            architecture.contains(user.quote),
            "{ARCHITECTURE} no longer says \"{}\"; make SQLITE_USERS in tidy/tests/architecture.rs say what \
             the document now says about SQLite in `{}`",
            user.quote,
            user.crate_dir
        );
    }
    let allowed: BTreeSet<&str> = SQLITE_USERS.iter().map(|user| user.crate_dir).collect();
    for manifest in manifests() {
        let uses = manifest.normal.contains("rusqlite") || manifest.dev.contains("rusqlite");
        let says = allowed.contains(manifest.dir.as_str());
        assert!(
            !uses || says,
            "{}/Cargo.toml depends on rusqlite, but {ARCHITECTURE} does not say that `{}` talks to SQLite: \
             keep SQLite out of it, or document why it needs SQLite and add it to SQLITE_USERS in \
             tidy/tests/architecture.rs",
            manifest.dir,
            manifest.dir
        );
        assert!(
            uses || !says,
            "{ARCHITECTURE} says `{}` talks to SQLite, but {}/Cargo.toml has no rusqlite: correct the \
             document and SQLITE_USERS in tidy/tests/architecture.rs",
            manifest.dir,
            manifest.dir
        );
    }
}

/// An error enum keeps a `rusqlite::Error` as its source (never drop the source error), so `error.rs` may
/// name that type; any other use of `rusqlite` outside the modules the document names is SQLite access.
#[test]
fn only_the_modules_the_document_names_use_rusqlite() {
    let root = root();
    for user in &SQLITE_USERS {
        let Some(only_modules) = user.only_modules else { continue };
        let src = root.join(user.crate_dir).join("src");
        for file in rust_files(&src) {
            let module = relative_name(&file, &src);
            if only_modules.contains(&module.as_str()) {
                continue;
            }
            let mut text = read(&file);
            if module == "error.rs" {
                text = text.replace("rusqlite::Error", "");
            }
            assert!(
                !text.contains("rusqlite"),
                "{}/src/{module} uses rusqlite, but {ARCHITECTURE} says \"{}\": move the SQLite code into {}",
                user.crate_dir,
                user.quote,
                only_modules.join(" or ")
            );
        }
    }
}

#[test]
fn protocol_has_no_async_runtime() {
    let architecture = collapse_whitespace(&read(&root().join(ARCHITECTURE)));
    assert!(
        architecture.contains(PROTOCOL_QUOTE),
        "{ARCHITECTURE} no longer says \"{PROTOCOL_QUOTE}\"; update PROTOCOL_QUOTE and this check in \
         tidy/tests/architecture.rs to what the document says about `protocol`"
    );
    let protocol =
        manifests().into_iter().find(|manifest| manifest.dir == "protocol").expect("a protocol crate");
    assert!(
        !protocol.normal.contains("tokio"),
        "protocol/Cargo.toml depends on tokio, but {ARCHITECTURE} says \"{PROTOCOL_QUOTE}\": do the I/O in the \
         crates that use protocol"
    );
    let src = root().join("protocol/src");
    for file in rust_files(&src) {
        assert!(
            !read(&file).contains("tokio::"),
            "protocol/src/{} uses tokio, but {ARCHITECTURE} says \"{PROTOCOL_QUOTE}\": move that code out of \
             protocol",
            relative_name(&file, &src)
        );
    }
}

#[test]
fn the_crate_list_matches_the_cargo_manifests() {
    let manifests = manifests();
    let ours: BTreeSet<&str> = manifests.iter().map(|manifest| manifest.name.as_str()).collect();
    let actual: BTreeMap<String, Arrows> = manifests
        .iter()
        .map(|manifest| {
            let normal: BTreeSet<String> =
                manifest.normal.iter().filter(|name| ours.contains(name.as_str())).cloned().collect();
            let tests = manifest
                .dev
                .iter()
                .filter(|name| ours.contains(name.as_str()) && !normal.contains(*name))
                .cloned()
                .collect();
            (manifest.name.clone(), Arrows { normal, tests })
        })
        .collect();
    let documented = match documented_arrows(&read(&root().join(ARCHITECTURE))) {
        Ok(documented) => documented,
        Err(problem) => panic!("{problem}; the list should read:\n{}", crate_list(&actual, &manifests)),
    };
    if documented != actual {
        let mut differences = String::new();
        for name in actual.keys().chain(documented.keys()).collect::<BTreeSet<_>>() {
            let (doc, cargo) = (documented.get(name), actual.get(name));
            if doc != cargo {
                let (doc, cargo) = (describe(doc, &manifests), describe(cargo, &manifests));
                let _ = writeln!(differences, "  {name}: the document says {doc}; Cargo.toml says {cargo}");
            }
        }
        panic!(
            "the crate list in \"Bird's eye view\" of {ARCHITECTURE} differs from the Cargo.toml files:\n\
             {differences}If the Cargo.toml files are right, replace the list (and fix the picture above it) \
             with:\n{}",
            crate_list(&actual, &manifests)
        );
    }
}

/// The repository root: the parent of this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tidy/ sits in the repository root").to_path_buf()
}

/// A file's text; a missing file fails the test with its name.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// `text` with every run of whitespace (line breaks included) replaced by one space.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `file` relative to `dir`, with `/` separators.
fn relative_name(file: &Path, dir: &Path) -> String {
    let relative = file.strip_prefix(dir).expect("a file under its directory");
    relative.components().map(|part| part.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The workspace members, in the order the root Cargo.toml lists them.
fn manifests() -> Vec<Manifest> {
    let root = root();
    let text = read(&root.join("Cargo.toml"));
    let start = text.find("members = [").expect("a `members = [...]` list in the root Cargo.toml");
    let list = &text[start + "members = [".len()..];
    let list = &list[..list.find(']').expect("the members list ends")];
    list.split(',')
        .map(|member| member.trim().trim_matches('"'))
        .filter(|member| !member.is_empty())
        .map(|dir| parse_manifest(dir, &read(&root.join(dir).join("Cargo.toml"))))
        .collect()
}

/// Reads a member's package name and dependencies from its Cargo.toml, line by line: section headers,
/// then `name = ...`, `name.workspace = true` or `name = { ..., package = "real" }` under them.
fn parse_manifest(dir: &str, text: &str) -> Manifest {
    let mut manifest =
        Manifest { dir: dir.to_string(), name: String::new(), normal: BTreeSet::new(), dev: BTreeSet::new() };
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            // `[dependencies.name]` names its dependency in the header.
            if let Some((kind, name)) = section.rsplit_once('.')
                && kind.ends_with("dependencies")
            {
                let target =
                    if kind.ends_with("dev-dependencies") { &mut manifest.dev } else { &mut manifest.normal };
                target.insert(name.trim_matches('"').to_string());
                section.clear();
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if section == "package" && key == "name" {
            manifest.name = value.trim().trim_matches('"').to_string();
            continue;
        }
        if !section.ends_with("dependencies") {
            continue;
        }
        let mut name = key.split('.').next().unwrap_or(key).trim_matches('"').to_string();
        if let Some(start) = value.find("package = \"") {
            let rest = &value[start + "package = \"".len()..];
            name = rest[..rest.find('"').unwrap_or(rest.len())].to_string();
        }
        if section.ends_with("dev-dependencies") {
            manifest.dev.insert(name);
        } else {
            manifest.normal.insert(name);
        }
    }
    assert!(!manifest.name.is_empty(), "{dir}/Cargo.toml has no [package] name");
    manifest
}

/// A backticked name in ARCHITECTURE.md that looks like a path, and where it appears.
#[derive(Debug)]
struct NamedPath {
    /// The name as written.
    text: String,
    /// Its line number (of the opening backtick).
    line: usize,
    /// The heading above it.
    section: String,
    /// The crate whose "### `crate/`" section it is in, if any.
    crate_dir: Option<String>,
    /// The directory a list item starts with (`http/` in "- `http/`: ... `ingest.rs`"), if any.
    item_dir: Option<String>,
}

impl NamedPath {
    /// Where the name may point: the root; in a crate's section, the crate's root and `src/` (and the
    /// list item's directory under `src/`); outside one, any member's root and `src/`.
    fn candidates(&self, members: &[String]) -> Vec<PathBuf> {
        let mut bases = vec![String::new()];
        match &self.crate_dir {
            Some(crate_dir) => {
                bases.push(format!("{crate_dir}/"));
                bases.push(format!("{crate_dir}/src/"));
                if let Some(item_dir) = &self.item_dir {
                    bases.push(format!("{crate_dir}/src/{item_dir}"));
                }
            }
            None => {
                for member in members {
                    bases.push(format!("{member}/"));
                    bases.push(format!("{member}/src/"));
                }
            }
        }
        bases.into_iter().map(|base| PathBuf::from(format!("{base}{}", self.text))).collect()
    }
}

/// Every backticked name outside fenced blocks that ends like a path and has no space, `{` or `*` (those
/// are patterns such as `topics/{name}/` or `tree_*.rs`, not files). A code span may run on to the next line.
fn named_paths(markdown: &str) -> Vec<NamedPath> {
    let mut walker = Walker::default();
    let mut in_fence = false;
    for (index, line) in markdown.lines().enumerate() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        walker.line(index + 1, line);
    }
    walker.names
}

/// The state of [`named_paths`] as it reads the document line by line.
#[derive(Default)]
struct Walker {
    /// The names found so far.
    names: Vec<NamedPath>,
    /// The heading above the current line.
    section: String,
    /// The crate of the current "### `crate/`" section.
    crate_dir: Option<String>,
    /// The directory the current list item starts with.
    item_dir: Option<String>,
    /// Whether the current list item (or paragraph) has had a code span yet.
    item_has_span: bool,
    /// Whether the current line starts inside a code span.
    in_span: bool,
    /// The text of the open code span.
    span: String,
    /// The line the open code span starts on.
    span_line: usize,
}

impl Walker {
    /// Reads one line outside fenced blocks.
    fn line(&mut self, number: usize, line: &str) {
        if let Some(heading) = line.strip_prefix("## ").or_else(|| line.strip_prefix("### ")) {
            let heading = heading.trim();
            self.section = heading.to_string();
            self.crate_dir =
                heading.strip_prefix('`').and_then(|rest| rest.strip_suffix("/`")).map(ToString::to_string);
        }
        if line.starts_with("- ") {
            (self.item_dir, self.item_has_span) = (None, false);
        } else if !line.starts_with(' ') {
            (self.item_dir, self.item_has_span) = (None, true);
        }
        if self.in_span {
            self.span.push(' ');
        }
        let mut pieces = line.split('`').peekable();
        while let Some(piece) = pieces.next() {
            if self.in_span {
                self.span.push_str(piece);
            }
            if pieces.peek().is_none() {
                break;
            }
            // A backtick follows this piece: a span opens or closes.
            if self.in_span {
                let text = std::mem::take(&mut self.span);
                self.span_closed(text);
            } else {
                self.span_line = number;
            }
            self.in_span = !self.in_span;
        }
    }

    /// Records a complete code span.
    fn span_closed(&mut self, text: String) {
        if !self.item_has_span && text.ends_with('/') {
            self.item_dir = Some(text.clone());
        }
        self.item_has_span = true;
        if is_path(&text) {
            self.names.push(NamedPath {
                text,
                line: self.span_line,
                section: self.section.clone(),
                crate_dir: self.crate_dir.clone(),
                item_dir: self.item_dir.clone(),
            });
        }
    }
}

/// Whether a backticked name is a path to check.
fn is_path(text: &str) -> bool {
    !text.contains([' ', '{', '*']) && PATH_ENDINGS.iter().any(|ending| text.ends_with(ending))
}

/// The crate list of "Bird's eye view": the first fenced `text` block whose every line is
/// `crate: dependencies` or `crate: dependencies   tests: dependencies`, with `(none)` for no dependency.
fn documented_arrows(markdown: &str) -> Result<BTreeMap<String, Arrows>, String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```text") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(lines), line) => lines.push(line),
            (None, _) => {}
        }
    }
    let is_entry = |line: &&str| {
        line.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
    };
    let block = blocks
        .into_iter()
        .map(|lines| lines.into_iter().filter(|line| !line.trim().is_empty()).collect::<Vec<_>>())
        .find(|lines| !lines.is_empty() && lines.iter().all(is_entry))
        .ok_or_else(|| {
            format!(
                "{ARCHITECTURE} has no crate list: a fenced `text` block of `crate: dependencies   tests: \
                 dependencies` lines"
            )
        })?;
    let names = |list: &str| -> BTreeSet<String> {
        let list = list.trim();
        if list == "(none)" {
            return BTreeSet::new();
        }
        list.split(',').map(|name| name.trim().to_string()).filter(|name| !name.is_empty()).collect()
    };
    let mut arrows = BTreeMap::new();
    for line in block {
        let (name, rest) = line.split_once(':').expect("an entry line");
        let (normal, tests) = match rest.split_once("tests:") {
            Some((normal, tests)) => (names(normal), names(tests)),
            None => (names(rest), BTreeSet::new()),
        };
        if arrows.insert(name.to_string(), Arrows { normal, tests }).is_some() {
            return Err(format!("the crate list in {ARCHITECTURE} names `{name}` twice"));
        }
    }
    Ok(arrows)
}

/// The crate list as it should appear in ARCHITECTURE.md, in the order of the workspace members.
fn crate_list(arrows: &BTreeMap<String, Arrows>, manifests: &[Manifest]) -> String {
    let mut list = String::from("```text\n");
    for manifest in manifests {
        let entry = &arrows[&manifest.name];
        let mut line = format!("{:<14}{}", format!("{}:", manifest.name), join(&entry.normal, manifests));
        if !entry.tests.is_empty() {
            line = format!("{line:<56}tests: {}", join(&entry.tests, manifests));
        }
        let _ = writeln!(list, "{line}");
    }
    list.push_str("```");
    list
}

/// One crate's arrows as a message says them.
fn describe(arrows: Option<&Arrows>, manifests: &[Manifest]) -> String {
    match arrows {
        None => "nothing (no line)".to_string(),
        Some(arrows) if arrows.tests.is_empty() => format!("`{}`", join(&arrows.normal, manifests)),
        Some(arrows) => {
            format!("`{}`, tests: `{}`", join(&arrows.normal, manifests), join(&arrows.tests, manifests))
        }
    }
}

/// Crate names in the order of the workspace members (names that are not members last), comma-separated,
/// or `(none)`.
fn join(names: &BTreeSet<String>, manifests: &[Manifest]) -> String {
    let members: Vec<&str> = manifests.iter().map(|manifest| manifest.name.as_str()).collect();
    let mut ordered: Vec<&str> = members.iter().copied().filter(|name| names.contains(*name)).collect();
    ordered.extend(names.iter().map(String::as_str).filter(|name| !members.contains(name)));
    if ordered.is_empty() { "(none)".to_string() } else { ordered.join(", ") }
}
