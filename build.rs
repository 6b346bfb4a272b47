//! Builds the browser console (`web/`, React and TypeScript through Vite) when its sources
//! change, into `OUT_DIR`, and lists the files it produced for `src/server/console_assets.rs` to
//! embed, so that the node serves the console with no files beside it and nothing built is
//! committed.
//!
//! npm installs the exact versions `web/package-lock.json` names (`npm ci`) when
//! `web/node_modules` is missing or older than the lock file. Without npm, or if the build
//! fails, the node still builds: it embeds no console, and `/` says why and how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let web = manifest.join("web");
    for watched in ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "public"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    let dist = out.join("console");
    let files = match build(&web, &dist) {
        Ok(()) => {
            let mut files = Vec::new();
            list(&dist, &dist, &mut files);
            files.sort();
            Ok(files)
        }
        Err(why) => {
            println!("cargo:warning=the browser console was not built: {why}");
            Err(why)
        }
    };
    let mut code = String::from(
        "/// The console's files: path (from `/`) and contents.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (path, file) in files.iter().flatten() {
        code.push_str(&format!("    ({path:?}, include_bytes!({:?})),\n", file.display()));
    }
    code.push_str(
        "];\n/// Why the console is missing from this build, if it is.\npub const NOT_BUILT: Option<&str> = ",
    );
    match &files {
        Ok(_) => code.push_str("None;\n"),
        Err(why) => code.push_str(&format!("Some({why:?});\n")),
    }
    std::fs::write(out.join("console_assets.rs"), code).expect("OUT_DIR is writable");
}

/// Runs npm in `web` to build the console into `dist`.
fn build(web: &Path, dist: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let run = |args: &[&str]| -> Result<(), String> {
        let output = Command::new(npm)
            .args(args)
            .current_dir(web)
            .output()
            .map_err(|e| format!("cannot run npm ({e}); install Node.js and npm, then build again"))?;
        if output.status.success() {
            return Ok(());
        }
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        Err(format!("`npm {}` failed: {} {}", args.join(" "), tail(&output.stdout), tail(&output.stderr)))
    };
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(&web.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&web.join("package-lock.json")) {
        run(&["ci", "--no-audit", "--no-fund", "--loglevel=error"])?;
    }
    let dist = dist.to_str().ok_or("OUT_DIR is not UTF-8")?;
    run(&["run", "build", "--", "--outDir", dist, "--emptyOutDir"])
}

/// Every file under `dir`, as (its path from `root` with a leading `/`, its full path).
fn list(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push((format!("/{}", relative.to_string_lossy()), path.clone()));
        }
    }
}
