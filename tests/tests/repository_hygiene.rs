//! The README's first command, run in the checkout, must not leave files that `git add .` would
//! pick up (issue 23): the store, its journal, and `dynamic-security.json.pw`, which holds the
//! generated admin password in clear text. The README runs it in `data/`; both places are ignored.

use std::path::Path;
use std::process::Command;

#[test]
fn files_the_broker_writes_in_the_checkout_are_ignored_by_git() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let written = [
        "dynamic-security.json",
        "dynamic-security.json.pw",
        "dynamic-security.json.journal",
        "dynamic-security.json.new",
        "data/dynamic-security.json",
        "data/dynamic-security.json.pw",
    ];
    for path in written {
        let status = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["check-ignore", "--quiet", "--no-index", path])
            .status()
            .expect("run git (the tests run in a git checkout)");
        assert_eq!(status.code(), Some(0), "{path} is not ignored by .gitignore: `git add .` would commit it");
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains("mkdir -p data && cd data && cargo run --release -p dynsec-broker"),
        "README's first command"
    );
    assert!(readme.contains("admin password **in clear"), "README says what the .pw file holds");
}
