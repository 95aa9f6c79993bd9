//! `bud-e2e`: registers or removes the simulated fleet on the cluster `KUBECONFIG` names.

use bud_e2e::{fleet::Fleet, harness};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Local control plane tooling for Bud Foundry's end-to-end tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the simulated fleet of kwok nodes.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
    /// Install (server-side apply) the bud.studio CRDs and wait until they are established.
    InstallCrds,
    /// Apply N ModelDeployments of mixed sizes and measure the time until all are Ready and
    /// the memory of the operator process PID (see e2e/bench/reconcile.sh).
    BenchReconcile {
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long)]
        operator_pid: u32,
        /// Markdown report to write.
        #[arg(long)]
        report: PathBuf,
        /// The command line to print in the report.
        #[arg(long, default_value = "e2e/bench/reconcile.sh")]
        command: String,
    },
    /// Play the container runtime of engine pods: run `bud-sim serve` at each Running
    /// engine pod's address until the pod goes away (stop with Ctrl-C).
    EngineRuntime {
        /// Folder for the emulators' logs.
        #[arg(long, default_value = ".work/engines")]
        log_dir: PathBuf,
        /// Extra flags for every emulator, e.g. `--time-scale=0.1`.
        #[arg(long, allow_hyphen_values = true)]
        emulator_arg: Vec<String>,
    },
}

#[derive(Subcommand)]
enum FleetAction {
    /// Register (or update) the nodes of a fleet file.
    Apply {
        /// The fleet file.
        #[arg(long, default_value_os_t = harness::default_fleet_path())]
        file: PathBuf,
    },
    /// Remove every node registered from a fleet file.
    Delete,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = harness::client().await?;
    match cli.command {
        Command::Fleet {
            action: FleetAction::Apply { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read fleet file {}: {e}", file.display()))?;
            let fleet =
                Fleet::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for name in harness::apply_fleet(&client, &fleet).await? {
                println!("node/{name} applied");
            }
        }
        Command::Fleet {
            action: FleetAction::Delete,
        } => {
            harness::delete_fleet(&client).await?;
            println!("simulated nodes deleted");
        }
        Command::EngineRuntime {
            log_dir,
            emulator_arg,
        } => {
            bud_e2e::engine_runtime::run_until_interrupted(client, emulator_arg, log_dir).await?;
        }
        Command::BenchReconcile {
            count,
            operator_pid,
            report,
            command,
        } => {
            let result = bud_e2e::bench::reconcile(
                &client,
                count,
                operator_pid,
                std::time::Duration::from_secs(900),
            )
            .await?;
            let markdown = result.markdown(&command);
            std::fs::write(&report, &markdown)?;
            println!("{markdown}");
        }
        Command::InstallCrds => {
            harness::install_crds(&client).await?;
            println!("bud.studio CRDs established");
        }
    }
    Ok(())
}
