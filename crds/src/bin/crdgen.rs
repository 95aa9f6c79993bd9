//! Writes every CRD as YAML into a directory (default `charts/bud/crds`), one file per
//! kind; `--check` compares instead and fails on any difference (CI's drift check).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("charts/bud/crds");
    let mut check = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--out" => {
                dir = PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--out DIR] [--check]\nWrites the bud.studio CRDs to DIR (default charts/bud/crds); --check fails if the files differ."
                );
                return Ok(());
            }
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: crdgen [--out DIR] [--check]")
            }
        }
    }
    std::fs::create_dir_all(&dir)?;
    let mut stale = Vec::new();
    let mut expected_files = Vec::new();
    for crd in bud_crds::all_crds() {
        let path = dir.join(bud_crds::crd_file_name(&crd));
        let yaml = bud_crds::crd_yaml(&crd)?;
        expected_files.push(path.clone());
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() != Some(yaml.as_str()) {
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::write(&path, yaml)?;
                println!("wrote {}", path.display());
            }
        }
    }
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") && !expected_files.contains(&path) {
            if check {
                stale.push(format!("{} (no longer generated)", path.display()));
            } else {
                std::fs::remove_file(&path)?;
                println!("removed {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        anyhow::bail!(
            "CRD YAML is out of date: {}\nrun `make crds` (cargo run -p bud-crds --bin crdgen) and commit the result",
            stale.join(", ")
        );
    }
    Ok(())
}
