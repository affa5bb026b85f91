//! `cairn`: one binary that runs every part of cairn (orchestrator, local stack) and speaks
//! its queries and commands. The contract for scripts is `shared/CLI.md`: flags and JSON
//! fields are only ever added, never renamed.

mod audit;
mod auth;
mod commands;
mod dev;
mod events;
mod job_history;
mod logs;
mod output;
mod query;
mod records;
mod replay;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Place jobs on a fleet of edge nodes; every assignment reaches its node",
    after_help = "Examples:\n  cairn dev                                  start a local stack\n  cairn job deploy examples/hello.yaml --wait\n  cairn execution list --job hello\n  cairn events --follow                      tail the event log\n\nTables show short ids (a unique prefix, 8 characters or more) and colour only on a\nterminal without NO_COLOR; --wide shows full ids, -o json and -o yaml always do."
)]
struct Cli {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "CAIRN_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// NATS credentials file.
    #[arg(long, global = true, env = "CAIRN_NATS_CREDS")]
    creds: Option<PathBuf>,
    /// Require TLS and trust only this CA certificate (PEM), as `cairn auth init --tls`
    /// makes.
    #[arg(long, global = true, env = "CAIRN_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator: projects the event log into views under --data.
    #[command(after_help = "Example:\n  cairn orchestrator --data /var/lib/cairn")]
    Orchestrator(dev::OrchestratorArgs),
    /// Run an edge agent: pulls this node's work, runs it, reports back.
    #[command(
        after_help = "Example:\n  cairn edge --node-id edge-1 --data /var/lib/cairn/edge --label role=edge --capacity 4"
    )]
    Edge(dev::EdgeArgs),
    /// Run a local stack: a nats-server with JetStream, an orchestrator and N edges.
    #[command(after_help = "Example:\n  cairn dev --edges 3 --data .cairn/dev")]
    Dev(dev::DevArgs),
    /// Nodes of the fleet.
    #[command(
        subcommand,
        after_help = "Examples:\n  cairn node list\n  cairn node list -o json"
    )]
    Node(NodeCommand),
    /// Jobs: deploy, stop, list, describe.
    #[command(
        subcommand,
        after_help = "Examples:\n  cairn job deploy examples/hello.yaml --wait\n  cairn job list\n  cairn job describe hello\n  cairn job history hello -p\n  cairn job stop hello"
    )]
    Job(JobCommand),
    /// Executions of jobs on nodes.
    #[command(
        subcommand,
        after_help = "Examples:\n  cairn execution list --job hello\n  cairn execution logs 01JD3XQ2ABCD --follow"
    )]
    Execution(ExecutionCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(
        after_help = "Examples:\n  cairn completions bash > /etc/bash_completion.d/cairn\n  cairn completions zsh > \"${fpath[1]}/_cairn\"\n  cairn completions fish > ~/.config/fish/completions/cairn.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the event log as JSON lines, from a sequence or a time; --follow tails it.
    #[command(
        after_help = "Examples:\n  cairn events\n  cairn events --from-seq 100\n  cairn events --since 10m --follow\n  cairn events --since 2026-11-23T10:02:00Z"
    )]
    Events(events::EventsArgs),
    /// Audit the log: an entity's causal history, verification of the live views, export.
    #[command(
        subcommand,
        after_help = "Examples:\n  cairn audit history job heartbeat\n  cairn audit verify\n  cairn audit export > cairn-archive.jsonl"
    )]
    Audit(audit::AuditCommand),
    /// Credentials: keys, the nats-server configuration, and a user per role and per node.
    #[command(
        subcommand,
        after_help = "Examples:\n  cairn auth init --dir /etc/cairn/auth\n  nats-server -c /etc/cairn/auth/nats-server.conf -p 4222 -sd /var/lib/nats\n  cairn auth node edge-1 --dir /etc/cairn/auth\n  cairn auth revoke edge-1 --dir /etc/cairn/auth --creds /etc/cairn/auth/admin.creds"
    )]
    Auth(AuthCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Makes the operator, the accounts, the server configuration and the credentials of
    /// the orchestrator, admin and reader roles in DIR.
    #[command(
        after_help = "Examples:\n  cairn auth init --dir /etc/cairn/auth\n  cairn auth init --dir /etc/cairn/auth --tls --tls-host nats.example.com\n  nats-server -c /etc/cairn/auth/nats-server.conf -p 4222 -sd /var/lib/nats"
    )]
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Also make a CA and a server certificate (DIR/tls/), and require TLS.
        #[arg(long)]
        tls: bool,
        /// A name the server certificate is for (repeatable; default localhost,
        /// 127.0.0.1 and ::1).
        #[arg(long = "tls-host", requires = "tls")]
        tls_hosts: Vec<String>,
        /// Succeed without touching DIR when it already holds a deployment's keys (for a
        /// set-up step that runs at every start).
        #[arg(long)]
        if_missing: bool,
    },
    /// Issues a node's credentials (DIR/nodes/ID.creds) and prints their path; the
    /// running server needs no change. Credentials already issued are kept.
    #[command(
        after_help = "Example:\n  cairn edge --node-id edge-1 --data /var/lib/cairn/edge \\\n    --creds \"$(cairn auth node edge-1 --dir /etc/cairn/auth)\""
    )]
    Node {
        id: cairn_shared::NodeId,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revokes a node's credentials on the running server (at --nats): its connection is
    /// closed and its next one refused.
    #[command(
        after_help = "Example:\n  cairn auth revoke edge-1 --dir /etc/cairn/auth --nats nats://10.0.0.5:4222"
    )]
    Revoke {
        id: cairn_shared::NodeId,
        #[arg(long)]
        dir: PathBuf,
    },
}

/// How a table is shown; JSON and YAML always carry everything.
#[derive(clap::Args, Clone, Copy)]
struct TableArgs {
    /// Show full ids and every column (tables show short ids and the main columns).
    #[arg(long)]
    wide: bool,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Every node with its state, labels and number of non-terminal executions.
    #[command(
        after_help = "Examples:\n  cairn node list\n  cairn node list -o json\n  cairn node list --wide\n  cairn node list --at-seq 1200\n  cairn node list --at 2026-11-23T10:02:00Z"
    )]
    List {
        #[command(flatten)]
        table: TableArgs,
        #[command(flatten)]
        at: replay::AsOf,
    },
    /// Take a node out of service: it gets no new work, its service replicas move to other
    /// nodes as their replacements come up, batch work runs out, daemons stop once the rest
    /// has left, and whatever still runs at the deadline is asked to stop. The node stays
    /// ineligible until `node eligibility ID enable`.
    #[command(
        after_help = "Examples:\n  cairn node drain edge-1\n  cairn node drain edge-1 --deadline 10m --wait"
    )]
    Drain {
        /// The node's id.
        node: cairn_shared::NodeId,
        /// How long its work has to move or end before what is left is asked to stop.
        #[arg(long, default_value = "1h")]
        deadline: humantime::Duration,
        /// Wait until nothing runs on the node.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (default: the deadline and a minute).
        #[arg(long)]
        timeout: Option<humantime::Duration>,
    },
    /// Make a node eligible for new work, or not: an ineligible node keeps what it runs and
    /// is given nothing new.
    #[command(
        after_help = "Examples:\n  cairn node eligibility edge-1 disable\n  cairn node eligibility edge-1 enable --wait"
    )]
    Eligibility {
        /// The node's id.
        node: cairn_shared::NodeId,
        /// enable or disable.
        to: commands::Eligibility,
        /// Wait until the orchestrator has decided the change.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    /// Deploy a job from a YAML or JSON spec; an existing name gets a new version.
    #[command(
        after_help = "Examples:\n  cairn job deploy examples/hello.yaml\n  cairn job deploy job.json --wait --timeout 2m"
    )]
    Deploy {
        /// The job spec (YAML, or JSON with a .json extension).
        file: PathBuf,
        /// Wait for the decision and then the job's state: running for daemon and service
        /// jobs, completed for batch and ops jobs. Exits 1 on rejection, failure or timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Stop every execution of a job.
    #[command(
        after_help = "Examples:\n  cairn job stop heartbeat\n  cairn job stop heartbeat --wait\n  cairn job stop 01JD3XQ2   (a unique prefix of the job's id)"
    )]
    Stop {
        /// Job id, unique id prefix, or name.
        job: String,
        /// Wait until the orchestrator has decided the stop.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Run a finished job's current version again, as if freshly deployed (a batch or ops
    /// job that completed, failed or was stopped; any job that ended).
    #[command(
        after_help = "Examples:\n  cairn job rerun nightly-report\n  cairn job rerun nightly-report --wait --timeout 10m"
    )]
    Rerun {
        /// Job id, unique id prefix, or name.
        job: String,
        /// Wait until the run ends (batch, ops) or runs (service, daemon).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Deploy an earlier version's spec again, as a new version (default: the version
    /// before the current one). `cairn job history NAME` lists the versions.
    #[command(
        after_help = "Examples:\n  cairn job revert web\n  cairn job revert web --version 1 --wait"
    )]
    Revert {
        /// Job id, unique id prefix, or name.
        job: String,
        /// The version whose spec to bring back.
        #[arg(long)]
        version: Option<u32>,
        /// Wait until the new version runs (or, for batch and ops, ends).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Roll out the rest of a version whose canaries are healthy (`update.canary`).
    #[command(
        after_help = "Examples:\n  cairn job promote web\n  cairn job promote web --wait --timeout 5m"
    )]
    Promote {
        /// Job id, unique id prefix, or name.
        job: String,
        /// Wait until the rollout is done.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Every job at its current version.
    #[command(
        after_help = "Examples:\n  cairn job list\n  cairn job list --wide\n  cairn job list -o yaml\n  cairn job list --at 10m"
    )]
    List {
        #[command(flatten)]
        table: TableArgs,
        #[command(flatten)]
        at: replay::AsOf,
    },
    /// One job by id, unique id prefix or name: its spec and its executions of every version.
    #[command(
        after_help = "Examples:\n  cairn job describe heartbeat\n  cairn job describe 01JD3XQ2 --wide\n  cairn job describe 01JD3XQ2 -o json\n  cairn job describe heartbeat --at-seq 1200"
    )]
    Describe {
        /// Job id, unique id prefix, or name.
        job: String,
        #[command(flatten)]
        table: TableArgs,
        #[command(flatten)]
        at: replay::AsOf,
    },
    /// Every version of a job from the log; -p shows how each spec differs from the last.
    #[command(
        after_help = "Examples:\n  cairn job history heartbeat\n  cairn job history heartbeat -p"
    )]
    History {
        /// Job id or name.
        job: String,
        /// Show each version's spec as a diff against the previous version.
        #[arg(short = 'p', long = "diff")]
        diff: bool,
    },
}

#[derive(Subcommand)]
enum ExecutionCommand {
    /// Executions, filtered by job (id or name: every version), node or state.
    #[command(
        after_help = "Examples:\n  cairn execution list --job heartbeat\n  cairn execution list --node dev-edge-1 --state running\n  cairn execution list --job 01JD3XQ2 --wide\n  cairn execution list --job heartbeat --at-seq 1200"
    )]
    List {
        /// Job id, unique id prefix, or name.
        #[arg(long)]
        job: Option<String>,
        /// Node id.
        #[arg(long)]
        node: Option<cairn_shared::NodeId>,
        /// pending, accepted, running, completed, failed, stopped, cancelled or lost.
        #[arg(long)]
        state: Option<cairn_shared::ExecutionState>,
        #[command(flatten)]
        table: TableArgs,
        #[command(flatten)]
        at: replay::AsOf,
    },
    /// The task's output (raw text). --follow keeps printing until the execution ends.
    #[command(
        after_help = "Examples:\n  cairn execution logs 01JD3XQ2ABCD\n  cairn execution logs 01JD3XQ2ABCD --follow"
    )]
    Logs {
        /// Execution id or unique id prefix.
        execution: String,
        /// Keep printing as the task writes, until the execution ends.
        #[arg(long)]
        follow: bool,
    },
}

/// How long a command waits for JetStream to answer before giving up.
pub(crate) const JETSTREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connection settings every command shares.
pub struct Global {
    pub nats: String,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub output: Output,
}

impl Global {
    /// What this command's connections present and trust.
    pub fn access(&self) -> cairn_streams::Access {
        cairn_streams::Access {
            creds: self.creds.clone(),
            tls_ca: self.tls_ca.clone(),
            inbox_prefix: None,
        }
    }

    /// Connects for a command: fails at once when no server answers.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client> {
        Ok(cairn_streams::connect_as(&self.nats, &self.access(), name, false).await?)
    }

    /// Connects for a command that uses JetStream itself, and waits for JetStream to
    /// answer: a cluster that is still electing its meta leader answers within seconds.
    /// Says on stderr that it waits when that takes over a second, and gives up after
    /// [`JETSTREAM_WAIT`] with a sentence naming the server.
    pub async fn jetstream(&self, name: &str) -> Result<async_nats::jetstream::Context> {
        let js = cairn_streams::jetstream(self.connect(name).await?);
        let probe = js.clone();
        let ready = cairn_streams::wait_for_jetstream(&probe);
        tokio::pin!(ready);
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut ready)
            .await
            .is_err()
        {
            eprintln!(
                "waiting for JetStream at {} (a cluster still electing its leader?)",
                self.nats
            );
            tokio::time::timeout(JETSTREAM_WAIT - std::time::Duration::from_secs(1), ready)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "JetStream at {} did not answer within {}s: is JetStream enabled, and \
                         does the cluster have a quorum?",
                        self.nats,
                        JETSTREAM_WAIT.as_secs()
                    )
                })?;
        }
        Ok(js)
    }

    /// Connects for a long-running part: keeps trying until a server answers.
    pub async fn connect_persistent(&self, name: &str) -> Result<async_nats::Client> {
        Ok(cairn_streams::connect_as(&self.nats, &self.access(), name, true).await?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();

    let default_level = match cli.command {
        Command::Orchestrator(_) | Command::Dev(_) | Command::Edge(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let global = Global {
        nats: cli.nats,
        creds: cli.creds,
        tls_ca: cli.tls_ca,
        output: cli.output,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Orchestrator(args) => dev::orchestrator(&global, args).await,
            Command::Dev(args) => dev::dev(&global, args).await,
            Command::Edge(args) => dev::edge(&global, args).await,
            Command::Events(args) => events::run(&global, args).await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "cairn",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Command::Audit(command) => audit::run(&global, command).await,
            Command::Auth(AuthCommand::Init {
                dir,
                tls,
                tls_hosts,
                if_missing,
            }) => {
                let tls = tls.then(|| auth::Tls {
                    hosts: if tls_hosts.is_empty() {
                        auth::LOCAL_HOSTS.map(str::to_owned).to_vec()
                    } else {
                        tls_hosts
                    },
                });
                auth::init(&global, &dir, tls, if_missing)
            }
            Command::Auth(AuthCommand::Node { id, dir }) => auth::node(&global, &dir, id),
            Command::Auth(AuthCommand::Revoke { id, dir }) => auth::revoke(&global, &dir, id).await,
            Command::Node(NodeCommand::List { table, at }) => {
                query::node_list(&global, &at, table.wide).await
            }
            Command::Node(NodeCommand::Drain {
                node,
                deadline,
                wait,
                timeout,
            }) => {
                let timeout = timeout.map(Into::into);
                commands::drain(&global, node, deadline.into(), wait, timeout).await
            }
            Command::Node(NodeCommand::Eligibility {
                node,
                to,
                wait,
                timeout,
            }) => commands::eligibility(&global, node, to, wait, timeout.into()).await,
            Command::Job(JobCommand::List { table, at }) => {
                query::job_list(&global, &at, table.wide).await
            }
            Command::Job(JobCommand::History { job, diff }) => {
                job_history::run(&global, &job, diff).await
            }
            Command::Job(JobCommand::Deploy {
                file,
                wait,
                timeout,
            }) => commands::deploy(&global, &file, wait, timeout.into()).await,
            Command::Job(JobCommand::Stop { job, wait, timeout }) => {
                commands::stop(&global, job, wait, timeout.into()).await
            }
            Command::Job(JobCommand::Promote { job, wait, timeout }) => {
                commands::promote(&global, job, wait, timeout.into()).await
            }
            Command::Job(JobCommand::Rerun { job, wait, timeout }) => {
                commands::rerun(&global, job, wait, timeout.into()).await
            }
            Command::Job(JobCommand::Revert {
                job,
                version,
                wait,
                timeout,
            }) => commands::revert(&global, job, version, wait, timeout.into()).await,
            Command::Job(JobCommand::Describe { job, table, at }) => {
                query::job_describe(&global, job, &at, table.wide).await
            }
            Command::Execution(ExecutionCommand::Logs { execution, follow }) => {
                logs::run(&global, execution, follow).await
            }
            Command::Execution(ExecutionCommand::List {
                job,
                node,
                state,
                table,
                at,
            }) => {
                let query = cairn_orchestrator::query::ExecutionQuery { job, node, state };
                query::execution_list(&global, query, &at, table.wide).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that names what was wrong; the chain of causes joined with colons.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
