//! The Manager's API from the command line: `login`, `vi`, `template`,
//! `host`, `datacenter`. Tables by default, `--output json` for scripts.
//!
//! Credentials: `neptune login` stores the Manager URL and an API token in
//! `$NEPTUNE_CONFIG` (default `~/.config/neptune/credentials.json`, mode
//! 0600); `NEPTUNE_URL` and `NEPTUNE_TOKEN` override it.

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is this command's job

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use neptune_api as api;
use neptune_api::{JobId, SshKeyId, TemplateId, TokenId, ViId};
use neptune_client::{Client, ClientError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// The Manager's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "admin")]
    user: String,
    /// Read the password from standard input (one line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ViCommand {
    /// Create a VI from a topology file (XML or JSON) or a catalogue kind.
    Create {
        #[arg(short = 'f', long = "file", conflicts_with = "catalogue")]
        file: Option<PathBuf>,
        #[arg(long, required_unless_present = "file")]
        catalogue: Option<String>,
        #[arg(long, requires = "catalogue")]
        nodes: Option<usize>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Your VIs (administrators: all).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// One VI: its VMs and hosts, its addresses, its last job.
    Show {
        id: ViId,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Ask for the VI to be allocated.
    Request { id: ViId },
    /// Take a pending request back.
    Withdraw { id: ViId },
    /// Take a rejected design back to edit it.
    Revise { id: ViId },
    /// Show what accepting would do (changes nothing).
    Plan {
        id: ViId,
        #[arg(long)]
        datacenter: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Accept a request (administrators): place, reserve, deploy.
    Accept {
        id: ViId,
        #[arg(long)]
        datacenter: Option<String>,
        /// A manual placement: NODE=HOST for every node.
        #[arg(long = "place", value_parser = parse_pin)]
        place: Vec<(String, String)>,
    },
    /// Deploy an accepted VI again on the hosts it holds, after a deploy
    /// rolled back (administrators).
    Deploy { id: ViId },
    /// Free an accepted VI's hosts and addresses and return it to the
    /// queue (administrators).
    Release { id: ViId },
    /// Reject a request (administrators).
    Reject {
        id: ViId,
        #[arg(long)]
        reason: String,
    },
    /// Suspend a running VI: its VMs are saved and its hosts freed.
    Suspend { id: ViId },
    /// Resume a suspended VI, placed again on whichever hosts have room.
    Resume { id: ViId },
    /// Take the VI off its hosts and free everything it holds (owner or administrator).
    Terminate { id: ViId },
    /// Move a running VI live to another datacenter (a suspended one is
    /// resumed there), keeping every address: administrators move it at
    /// once; its owner asks, and an administrator grants (by migrating it)
    /// or refuses (--cancel). --plan shows what it would do.
    Migrate {
        id: ViId,
        /// The datacenter to move to.
        #[arg(long, required_unless_present = "cancel")]
        to: Option<String>,
        /// A manual placement there (administrators): NODE=HOST for every node.
        #[arg(long = "place", value_parser = parse_pin)]
        place: Vec<(String, String)>,
        /// Show the plan (target hosts, cut, what the move copies) and change nothing.
        #[arg(long, conflicts_with = "cancel")]
        plan: bool,
        /// Take back (owner) or refuse (administrator) the waiting request.
        #[arg(long)]
        cancel: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Migration requests waiting for an administrator (administrators).
    Migrations {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// A VM's serial console (owner or administrator): type lines on it,
    /// print its end, or follow it (lines read from standard input are
    /// typed on it) until interrupted.
    Console {
        id: ViId,
        /// The node whose VM's console it is.
        node: String,
        /// A line to type first (a newline is added); repeatable.
        #[arg(long = "send")]
        send: Vec<String>,
        /// How much of the console's end to print (at most 1048576).
        #[arg(long, default_value_t = 4096)]
        bytes: u64,
        /// Keep printing what the guest prints, and type what standard
        /// input reads, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Wait until the operation in progress ends, showing its progress.
    Wait {
        id: ViId,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// List them (a table, or --output json).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Register an image of the Manager's image repository (administrators;
    /// public unless --private).
    Create {
        name: String,
        /// Path of the image inside the repository.
        #[arg(long)]
        image: String,
        #[arg(long, default_value = "")]
        os: String,
        /// Only its owner (the administrator) may use it.
        #[arg(long)]
        private: bool,
    },
    /// Upload an image file of this machine (qcow2 or raw, standalone: no
    /// backing file) as a template of yours: private, unless an
    /// administrator asks --public. The Manager checks it with qemu-img.
    Import {
        /// The image file.
        file: PathBuf,
        /// The template's name (1 to 64 letters, digits, '-', '_' or '.').
        #[arg(long)]
        name: String,
        #[arg(long)]
        os: Option<String>,
        /// Default 1.
        #[arg(long)]
        vcpus: Option<i64>,
        /// Default 512.
        #[arg(long)]
        ram_mib: Option<i64>,
        /// Default (and at least): the image's virtual size.
        #[arg(long)]
        disk_mib: Option<i64>,
        /// Every user may deploy from it (administrators).
        #[arg(long)]
        public: bool,
    },
    /// Make a template every user's (administrators).
    Publish {
        /// The template's id, or its name when only one template has it.
        template: String,
    },
    /// Make a template its owner's alone (administrators).
    Unpublish {
        /// The template's id, or its name when only one template has it.
        template: String,
    },
    /// Build a template from Debian's packages into a directory, here on
    /// this machine (no Manager needed; register it with `template create`
    /// once it is in the Manager's image repository). NAME: `neptune-tiny`,
    /// the tiny test template (a BusyBox guest on Debian's cloud kernel that
    /// boots in seconds under emulation and reads the same cloud-init seed
    /// as a full image), or `debian-12`, a real Debian 12 cloud image with
    /// cloud-init, made with mmdebstrap (minutes; needs root).
    Build {
        name: String,
        /// The directory to build in (the image, its manifest, a cache).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Save the VM of a node of a running VI as a new template.
    Save {
        /// The new template's name.
        name: String,
        #[arg(long)]
        vi: ViId,
        #[arg(long)]
        node: String,
        /// Defaults to the OS of the template the VM was made from.
        #[arg(long)]
        os: Option<String>,
        /// Return once the job has started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Your SSH public keys (a table, or --output json).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Add an SSH public key (OpenSSH's one-line form, as in
    /// ~/.ssh/id_ed25519.pub; `-` reads standard input): the guests of your
    /// VIs deployed from now on accept it, for their OS user.
    Add {
        file: PathBuf,
        /// Default: the key's comment, else its fingerprint.
        #[arg(long)]
        name: Option<String>,
    },
    /// Forget a key (guests already deployed keep it).
    Remove { id: SshKeyId },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Your tokens that have not expired (never their secrets).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make an API token; prints it once.
    Create {
        name: String,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// An Agent's token for DATACENTER/HOST: it may only register and
        /// heartbeat that host (administrators).
        #[arg(long, value_name = "DATACENTER/HOST")]
        agent: Option<String>,
    },
    /// Revoke a token by id (yours; administrators: any).
    Revoke { id: TokenId },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// List them (a table, or --output json).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// No more logins for NAME, and every token of theirs revoked.
    Disable { name: String },
    /// NAME may log in again.
    Enable { name: String },
    /// Change NAME's quota (administrators): each figure given replaces
    /// theirs, the others stay. What they hold already stays, even above it.
    Quota {
        name: String,
        /// VMs of their requested VIs.
        #[arg(long)]
        vms: Option<i64>,
        #[arg(long)]
        vcpus: Option<i64>,
        #[arg(long)]
        ram_mib: Option<i64>,
        /// Entry points (Home Addresses).
        #[arg(long)]
        public_addresses: Option<i64>,
        /// VIs held at once.
        #[arg(long)]
        designs: Option<i64>,
        /// MiB of design text.
        #[arg(long)]
        design_mib: Option<i64>,
        /// Addresses of the private pools.
        #[arg(long)]
        private_addresses: Option<i64>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct PasswordArgs {
    /// Read the current and the new password from standard input (a line
    /// each) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DatacenterCommand {
    /// List them (a table, or --output json).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Register (or replace) a datacenter's Edge Service Switch
    /// (administrators); the Manager checks it answers with this key and
    /// care-of address first. --remove forgets it.
    Switch {
        datacenter: String,
        /// Its control API, http://IP:PORT.
        #[arg(long, required_unless_present = "remove")]
        url: Option<String>,
        /// The file holding its key (hex), on the Manager's machine.
        #[arg(long, required_unless_present = "remove")]
        key_file: Option<String>,
        /// Its Care-of Address.
        #[arg(long, required_unless_present = "remove")]
        care_of: Option<String>,
        /// Its interface toward the datacenter's public network.
        #[arg(long, required_unless_present = "remove")]
        port: Option<String>,
        /// The next hop toward entry points on that port, if any.
        #[arg(long)]
        via: Option<String>,
        #[arg(long, conflicts_with_all = ["url", "key_file", "care_of", "port", "via"])]
        remove: bool,
    },
    /// Every registered switch and whether it answers (administrators).
    Switches {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ListCommand {
    /// List them (a table, or --output json).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

fn parse_pin(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, h)| (n.to_owned(), h.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NODE=HOST"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Credentials {
    url: String,
    token: String,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NEPTUNE_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set (or set NEPTUNE_CONFIG)")?;
    Ok(PathBuf::from(home).join(".config/neptune/credentials.json"))
}

fn client() -> anyhow::Result<Client> {
    if let (Ok(url), Ok(token)) = (std::env::var("NEPTUNE_URL"), std::env::var("NEPTUNE_TOKEN")) {
        return Ok(Client::new(&url, Some(token)));
    }
    let path = credentials_path()?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("not logged in (no {}): run `neptune login`", path.display()))?;
    let creds: Credentials =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(Client::new(&creds.url, Some(creds.token)))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Turns API refusals into exit code 1 with the Manager's message.
fn finish(result: Result<(), anyhow::Error>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => match err.downcast_ref::<ClientError>() {
            Some(ClientError::Api {
                code,
                message,
                details,
                ..
            }) => {
                eprintln!("neptune: {message} ({code})");
                for d in details {
                    eprintln!("  {d}");
                }
                Ok(ExitCode::from(1))
            }
            _ => Err(err),
        },
    }
}

pub(crate) fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password(format!("password for {}: ", args.user))?
    };
    finish(runtime()?.block_on(async {
        let anonymous = Client::new(&args.url, None);
        let session = anonymous.login(&args.user, &password).await?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".to_owned());
        let session_client = Client::new(&args.url, Some(session.token));
        let api_token = session_client
            .create_api_token(&format!("neptune CLI on {host}"))
            .await?;
        session_client.logout().await?;
        let path = credentials_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let creds = Credentials {
            url: args.url.clone(),
            token: api_token.token,
        };
        write_private(&path, &serde_json::to_string_pretty(&creds)?)?;
        println!(
            "logged in to {} as {} ({:?})",
            args.url, api_token.user.name, api_token.user.role
        );
        Ok(())
    }))
}

fn write_private(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

/// Where each VM runs (or would run).
fn vm_table(vms: &[api::PlannedVm]) {
    vm_table_with_states(vms, None);
}

/// The VMs, with each one's state on its host now when `states` says.
fn vm_table_with_states(vms: &[api::PlannedVm], states: Option<&[api::VmStatus]>) {
    let mut headers = vec!["NODE", "HOST", "VCPUS", "RAM MIB", "DISK MIB"];
    if states.is_some() {
        headers.push("STATE");
    }
    let moving = vms.iter().any(|v| v.moving_to.is_some());
    if moving {
        headers.push("MOVING TO");
    }
    table(
        &headers,
        vms.iter()
            .map(|v| {
                let numbers = [v.vcpus, v.ram_mib, v.disk_mib].map(|n| n.to_string());
                let mut row: Vec<String> = [v.node.clone(), v.host.clone()]
                    .into_iter()
                    .chain(numbers)
                    .collect();
                if let Some(states) = states {
                    row.push(
                        states
                            .iter()
                            .find(|s| s.node == v.node)
                            .map_or_else(|| "-".to_owned(), |s| s.state.clone()),
                    );
                }
                if moving {
                    row.push(v.moving_to.clone().unwrap_or_else(|| "-".to_owned()));
                }
                row
            })
            .collect(),
    );
}

/// Every interface's address and every Home Address of an address plan.
fn address_table(plan: &api::AddressPlan) {
    if plan.interfaces.is_empty() && plan.home_addresses.is_empty() {
        return;
    }
    println!();
    let rows = plan
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.node.clone(),
                i.interface.clone(),
                format!("link {}", i.link),
                i.address.clone(),
            ]
        })
        .chain(plan.home_addresses.iter().map(|h| {
            vec![
                h.node.clone(),
                h.interface.clone(),
                format!("Home Address ({})", h.datacenter),
                h.address.clone(),
            ]
        }))
        .collect();
    table(&["NODE", "INTERFACE", "ON", "ADDRESS"], rows);
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn vi_rows(vis: &[api::Vi]) -> Vec<Vec<String>> {
    vis.iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                v.name.clone(),
                v.owner.clone(),
                v.state.to_string(),
                v.summary.nodes.to_string(),
                match (&v.home_datacenter, &v.location) {
                    (Some(home), Some(at)) if home != at => format!("{home} (at {at})"),
                    (home, _) => home.clone().unwrap_or_default(),
                },
            ]
        })
        .collect()
}

const VI_HEADERS: [&str; 6] = ["ID", "NAME", "OWNER", "STATE", "VMS", "DATACENTER"];

fn show_detail(d: &api::ViDetail, output: Output) -> anyhow::Result<()> {
    show_detail_with_states(d, None, output)
}

/// A VI's detail; with `states`, each VM's state on its host now.
fn show_detail_with_states(
    d: &api::ViDetail,
    states: Option<&[api::VmStatus]>,
    output: Output,
) -> anyhow::Result<()> {
    if output == Output::Json {
        return json(d);
    }
    table(&VI_HEADERS, vi_rows(std::slice::from_ref(&d.vi)));
    if let Some(reason) = &d.vi.reject_reason {
        println!("\nrejected: {reason}");
    }
    if let Some(at) = &d.vi.location {
        if d.vi.home_datacenter.as_deref() != Some(at.as_str()) {
            println!("\nruns in {at}, away from home");
        }
    }
    for b in &d.bindings {
        println!(
            "binding: {} -> {} (care-of {})",
            b.address,
            b.datacenter,
            b.care_of.as_deref().unwrap_or("unknown: no switch there")
        );
    }
    if let Some(r) = &d.migration_request {
        println!(
            "migration requested to {} by {}: waits for an administrator",
            r.to, r.requested_by
        );
    }
    if !d.vms.is_empty() {
        println!();
        vm_table_with_states(&d.vms, states);
    }
    if let Some(addresses) = &d.addresses {
        address_table(addresses);
    }
    if let Some(job) = d.jobs.last() {
        println!(
            "\nlast job: {} {} ({}/{}){}",
            job.kind,
            job.state,
            job.step,
            job.total,
            job.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn vi(cmd: ViCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    let rt = runtime()?;
    if let ViCommand::Wait { id, timeout } = cmd {
        return rt.block_on(wait(&client, id, Duration::from_secs(timeout)));
    }
    finish(rt.block_on(async {
        match cmd {
            ViCommand::Create {
                file,
                catalogue,
                nodes,
                name,
                output,
            } => {
                let source = if let Some(path) = file {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if text.trim_start().starts_with('{') {
                        api::DesignSource::Topology(
                            serde_json::from_str(&text)
                                .with_context(|| format!("{} is not JSON", path.display()))?,
                        )
                    } else {
                        api::DesignSource::Xml(text)
                    }
                } else if let Some(kind) = catalogue {
                    api::DesignSource::Catalogue(api::CatalogueRequest {
                        kind,
                        nodes,
                        bandwidth: None,
                        template: None,
                    })
                } else {
                    bail!("give a design: -f FILE (XML or JSON) or --catalogue KIND");
                };
                let design = api::ViDesign {
                    name,
                    ..api::ViDesign::new(source)
                };
                let d = client.create_vi(&design).await?;
                show_detail(&d, output)
            }
            ViCommand::List { output } => {
                let vis = client.vis().await?;
                if output == Output::Json {
                    return json(&vis);
                }
                table(&VI_HEADERS, vi_rows(&vis));
                Ok(())
            }
            ViCommand::Show { id, output } => {
                let d = client.vi(id).await?;
                // The VMs' states come from their hosts: a table shows them
                // when the hosts answer.
                let states = if d.vms.is_empty() || output == Output::Json {
                    None
                } else {
                    client.vm_states(id).await.ok()
                };
                show_detail_with_states(&d, states.as_deref(), output)
            }
            ViCommand::Request { id } => {
                show_detail(&client.act(id, "request").await?, Output::Table)
            }
            ViCommand::Withdraw { id } => {
                show_detail(&client.act(id, "withdraw").await?, Output::Table)
            }
            ViCommand::Revise { id } => {
                show_detail(&client.act(id, "revise").await?, Output::Table)
            }
            ViCommand::Deploy { id } => {
                show_detail(&client.act(id, "deploy").await?, Output::Table)
            }
            ViCommand::Release { id } => {
                show_detail(&client.act(id, "release").await?, Output::Table)
            }
            ViCommand::Suspend { id } => {
                show_detail(&client.act(id, "suspend").await?, Output::Table)
            }
            ViCommand::Resume { id } => {
                show_detail(&client.act(id, "resume").await?, Output::Table)
            }
            ViCommand::Terminate { id } => {
                show_detail(&client.act(id, "terminate").await?, Output::Table)
            }
            ViCommand::Plan {
                id,
                datacenter,
                output,
            } => {
                let plan = client.plan(id, datacenter.as_deref()).await?;
                if output == Output::Json {
                    return json(&plan);
                }
                let proof = match (plan.optimal, plan.lower_bound_mbps, plan.gap) {
                    (true, _, _) => ", proven the least".to_owned(),
                    (false, Some(lb), Some(gap)) => {
                        format!(", at least {lb} Mbit/s (gap {:.1} %)", gap * 100.0)
                    }
                    _ => String::new(),
                };
                println!(
                    "datacenter {}: cut {} Mbit/s{proof}, {}",
                    plan.datacenter,
                    plan.cut_mbps,
                    if plan.admissible {
                        "admissible"
                    } else {
                        "NOT admissible"
                    }
                );
                vm_table(&plan.vms);
                address_table(&plan.addresses);
                Ok(())
            }
            ViCommand::Accept {
                id,
                datacenter,
                place,
            } => {
                let placement =
                    (!place.is_empty()).then(|| place.into_iter().collect::<BTreeMap<_, _>>());
                let d = client
                    .accept(
                        id,
                        &api::AcceptRequest {
                            datacenter,
                            placement,
                        },
                    )
                    .await?;
                show_detail(&d, Output::Table)
            }
            ViCommand::Reject { id, reason } => {
                show_detail(&client.reject(id, &reason).await?, Output::Table)
            }
            ViCommand::Migrate {
                id,
                cancel: true,
                ..
            } => {
                client.cancel_migration(id).await?;
                println!("the migration request of {id} is withdrawn");
                Ok(())
            }
            ViCommand::Migrate {
                id,
                to,
                place,
                plan,
                output,
                ..
            } => {
                let to = to.unwrap_or_default();
                if plan {
                    let m = client.migration_plan(id, &to).await?;
                    if output == Output::Json {
                        return json(&m);
                    }
                    println!(
                        "from {} to {}: cut {} Mbit/s there{}, {} Mbit/s between the datacenters while split (at most), {} MiB to copy",
                        m.from,
                        m.plan.datacenter,
                        m.plan.cut_mbps,
                        if m.plan.admissible { "" } else { " (NOT admissible)" },
                        m.split_mbps,
                        m.copy_mib
                    );
                    if !m.bound_addresses.is_empty() {
                        println!(
                            "tunnelled from home: {}",
                            m.bound_addresses.join(", ")
                        );
                    }
                    vm_table(&m.plan.vms);
                    return Ok(());
                }
                let placement =
                    (!place.is_empty()).then(|| place.into_iter().collect::<BTreeMap<_, _>>());
                let d = client
                    .migrate(id, &api::MigrateRequest { to, placement })
                    .await?;
                if let Some(r) = &d.migration_request {
                    if output != Output::Json {
                        println!(
                            "requested: {} to {}; an administrator grants or refuses it",
                            d.vi.name, r.to
                        );
                    }
                }
                show_detail(&d, output)
            }
            ViCommand::Migrations { output } => {
                let all = client.migration_requests().await?;
                if output == Output::Json {
                    return json(&all);
                }
                table(
                    &["VI", "TO", "BY", "AT"],
                    all.iter()
                        .map(|r| {
                            vec![
                                r.vi.to_string(),
                                r.to.clone(),
                                r.requested_by.clone(),
                                (r.requested_at / 1000).to_string(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            ViCommand::Console {
                id,
                node,
                send,
                bytes,
                follow,
            } => console(&client, id, &node, &send, bytes, follow).await,
            ViCommand::Wait { .. } => Ok(()),
        }
    }))
}

/// `template build`: builds a template of the source tree's scripts here.
fn build_template(name: &str, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    if !neptune_manager::guests::BUILDABLE.contains(&name) {
        eprintln!(
            "error: no template named {name:?} can be built; known: {}",
            neptune_manager::guests::BUILDABLE.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let built = runtime()?.block_on(neptune_manager::guests::build_named(name, out))?;
    println!("image     {}", built.image.display());
    println!("os        {} {}", built.manifest.os, built.manifest.version);
    println!("format    {}", built.manifest.format);
    println!("size      {} bytes (virtual)", built.manifest.virtual_size);
    println!("sha256    {}", built.manifest.sha256);
    println!("packages  {}", built.manifest.packages.len());
    Ok(ExitCode::SUCCESS)
}

/// `vi console`: types `send`, prints the console's last `bytes`, and with
/// `follow` goes on printing what is new (twice a second) and typing the
/// lines standard input reads.
async fn console(
    client: &Client,
    id: ViId,
    node: &str,
    send: &[String],
    bytes: u64,
    follow: bool,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    for line in send {
        client
            .type_on_console(id, node, &format!("{line}\n"))
            .await?;
    }
    if !send.is_empty() {
        // Give the guest a moment to answer what was typed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut shown = client.console(id, node, bytes).await?;
    let mut out = std::io::stdout();
    out.write_all(shown.as_bytes())?;
    out.flush()?;
    if !follow {
        if !shown.ends_with('\n') {
            println!();
        }
        return Ok(());
    }
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        while let Ok(line) = lines.try_recv() {
            client
                .type_on_console(id, node, &format!("{line}\n"))
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = client.console(id, node, 1 << 16).await?;
        let new = console_news(&shown, &text);
        out.write_all(new.as_bytes())?;
        out.flush()?;
        shown = text;
    }
}

/// What `now` (the console's end) has past `before` (its end read
/// earlier): what follows the last 512 bytes of `before` in `now`, or all
/// of `now` when they are gone from it.
fn console_news<'a>(before: &str, now: &'a str) -> &'a str {
    if before.is_empty() {
        return now;
    }
    let mut from = before.len().saturating_sub(512);
    while !before.is_char_boundary(from) {
        from += 1;
    }
    let probe = &before[from..];
    match now.rfind(probe) {
        Some(at) => &now[at + probe.len()..],
        None => now,
    }
}

/// A job's progress bar: its kind, steps done of all, the current step.
fn progress_bar() -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("progress style: {e}"))?
            .progress_chars("=> "),
    );
    Ok(bar)
}

fn show_job_progress(bar: &indicatif::ProgressBar, job: &api::Job) {
    bar.set_prefix(job.kind.to_string());
    bar.set_length(u64::try_from(job.total).unwrap_or(0));
    bar.set_position(u64::try_from(job.step).unwrap_or(0));
    if job.moves.is_empty() {
        bar.set_message(job.step_name.clone());
    } else {
        let moved = job.moves.iter().filter(|m| m.done).count();
        let mib = |b: u64| b / (1 << 20);
        let sent: u64 = job.moves.iter().map(|m| m.bytes_done).sum();
        let left: u64 = job
            .moves
            .iter()
            .filter(|m| !m.done)
            .map(|m| m.bytes_remaining)
            .sum();
        bar.set_message(format!(
            "{} ({moved}/{} VMs moved, {} MiB sent, {} MiB to go)",
            job.step_name,
            job.moves.len(),
            mib(sent),
            mib(left)
        ));
    }
}

/// Follows the VI's current job with a progress bar until the VI settles.
/// Exit 0 when it reached the operation's goal, 1 when the job failed or
/// rolled back.
/// Whether a VI in `state`, whose last job is in `job`, has an operation
/// in progress. An accepted VI's deploy job may not have started yet (it
/// starts at once, or once another Manager takes it over from one that
/// died): the operation is in progress while its job runs.
fn in_progress(state: neptune_lifecycle::ViState, job: Option<api::JobState>) -> bool {
    state.is_in_progress()
        || matches!(
            job,
            Some(api::JobState::Running | api::JobState::RollingBack)
        )
}

async fn wait(client: &Client, id: ViId, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    let bar = progress_bar()?;
    loop {
        let d = match client.vi(id).await {
            Ok(d) => d,
            Err(e) => return finish(Err(e.into())),
        };
        let job = d.jobs.last();
        if let Some(job) = job {
            // A running job's own progress is read fresh: a migration's
            // moves advance between two changes of the VI.
            match client.job(job.id).await {
                Ok(fresh) if job.state == api::JobState::Running => show_job_progress(&bar, &fresh),
                _ => show_job_progress(&bar, job),
            }
        }
        if !in_progress(d.vi.state, job.map(|j| j.state)) {
            bar.finish_and_clear();
            let failed = job.is_some_and(|j| {
                matches!(j.state, api::JobState::Failed | api::JobState::RolledBack)
            });
            match job {
                Some(j) if failed => {
                    eprintln!(
                        "{} {}: {}",
                        j.kind,
                        j.state,
                        j.error.clone().unwrap_or_default()
                    );
                    println!("{}", d.vi.state);
                    return Ok(ExitCode::from(1));
                }
                _ => {
                    println!("{}", d.vi.state);
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            bail!(
                "VI {id} is still {} after {}s",
                d.vi.state,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows a job with a progress bar until it ends: exit 0 when it
/// succeeded, 1 when it failed or rolled back.
async fn wait_job(client: &Client, id: JobId, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    let bar = progress_bar()?;
    loop {
        let job = match client.job(id).await {
            Ok(j) => j,
            Err(e) => return finish(Err(e.into())),
        };
        show_job_progress(&bar, &job);
        match job.state {
            api::JobState::Running | api::JobState::RollingBack => {}
            api::JobState::Succeeded => {
                bar.finish_and_clear();
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                bar.finish_and_clear();
                eprintln!("{} {other}: {}", job.kind, job.error.unwrap_or_default());
                return Ok(ExitCode::from(1));
            }
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            bail!(
                "job {id} is still {} after {}s",
                job.state,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the visibility of the template named by id, or by a name only one
/// template has.
async fn set_visibility(
    client: &neptune_client::Client,
    template: &str,
    visibility: api::Visibility,
) -> anyhow::Result<()> {
    let id = match template.parse::<TemplateId>() {
        Ok(id) => id,
        Err(_) => {
            let named: Vec<api::Template> = client
                .templates()
                .await?
                .into_iter()
                .filter(|t| t.name == template)
                .collect();
            match named.as_slice() {
                [one] => one.id,
                [] => anyhow::bail!("no template is named {template:?}"),
                many => anyhow::bail!(
                    "{} templates are named {template:?} (owners: {}); give its id",
                    many.len(),
                    many.iter()
                        .map(|t| t.owner.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let t = client.set_template_visibility(id, visibility).await?;
    println!(
        "template {} ({}) is {}",
        t.name,
        t.owner,
        match t.visibility {
            api::Visibility::Public => "public",
            api::Visibility::Private => "private",
        }
    );
    Ok(())
}

pub(crate) fn template(cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    if let TemplateCommand::Build { name, out } = &cmd {
        return build_template(name, out);
    }
    let client = client()?;
    let rt = runtime()?;
    if let TemplateCommand::Save {
        name,
        vi,
        node,
        os,
        no_wait,
    } = cmd
    {
        return rt.block_on(async {
            let req = api::SaveTemplate {
                node,
                name: name.clone(),
                os_name: os,
            };
            let job = match client.save_template(vi, &req).await {
                Ok(j) => j,
                Err(e) => return finish(Err(e.into())),
            };
            if no_wait {
                println!("job {} saves template {name}", job.id);
                return Ok(ExitCode::SUCCESS);
            }
            let code = wait_job(&client, job.id, Duration::from_secs(3600)).await?;
            if code == ExitCode::SUCCESS {
                println!("template {name} saved");
            }
            Ok(code)
        });
    }
    finish(rt.block_on(async {
        match cmd {
            TemplateCommand::List { output } => {
                let ts = client.templates().await?;
                if output == Output::Json {
                    return json(&ts);
                }
                table(
                    &[
                        "NAME",
                        "OWNER",
                        "VISIBILITY",
                        "FORMAT",
                        "SIZE MIB",
                        "OS",
                        "VCPUS",
                        "RAM MIB",
                        "DISK MIB",
                    ],
                    ts.iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.owner.clone(),
                                match t.visibility {
                                    api::Visibility::Public => "public".to_owned(),
                                    api::Visibility::Private => "private".to_owned(),
                                },
                                t.format.clone(),
                                t.size_mib.to_string(),
                                t.os_name.clone(),
                                t.vcpus.to_string(),
                                t.ram_mib.to_string(),
                                t.disk_mib.to_string(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            TemplateCommand::Create {
                name,
                image,
                os,
                private,
            } => {
                let t = client
                    .create_template(&api::CreateTemplate {
                        name,
                        image,
                        os_name: os,
                        vcpus: None,
                        ram_mib: None,
                        disk_mib: None,
                        software: vec![],
                        visibility: private.then_some(api::Visibility::Private),
                    })
                    .await?;
                println!(
                    "template {} registered ({} {} MiB)",
                    t.name, t.format, t.size_mib
                );
                Ok(())
            }
            TemplateCommand::Import {
                file,
                name,
                os,
                vcpus,
                ram_mib,
                disk_mib,
                public,
            } => {
                let opened = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| format!("opening {}", file.display()))?;
                let length = opened
                    .metadata()
                    .await
                    .with_context(|| format!("reading {}", file.display()))?
                    .len();
                let query = api::ImportTemplate {
                    name,
                    os_name: os,
                    vcpus,
                    ram_mib,
                    disk_mib,
                    visibility: public.then_some(api::Visibility::Public),
                };
                let t = client
                    .import_template(&query, neptune_client::Body::from(opened), length)
                    .await?;
                println!(
                    "template {} imported ({} {} MiB, {})",
                    t.name,
                    t.format,
                    t.size_mib,
                    match t.visibility {
                        api::Visibility::Public => "public",
                        api::Visibility::Private => "private",
                    }
                );
                Ok(())
            }
            TemplateCommand::Publish { template } => {
                set_visibility(&client, &template, api::Visibility::Public).await
            }
            TemplateCommand::Unpublish { template } => {
                set_visibility(&client, &template, api::Visibility::Private).await
            }
            TemplateCommand::Save { .. } | TemplateCommand::Build { .. } => Ok(()),
        }
    }))
}

pub(crate) fn host(cmd: ListCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    finish(runtime()?.block_on(async {
        let ListCommand::List { output } = cmd;
        let hosts = client.hosts().await?;
        if output == Output::Json {
            return json(&hosts);
        }
        table(
            &[
                "NAME",
                "DATACENTER",
                "STATE",
                "CPUS",
                "RAM MIB",
                "SLOTS",
                "AGENT",
            ],
            hosts
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.datacenter.clone(),
                        format!("{:?}", h.state).to_lowercase(),
                        h.cpus.to_string(),
                        h.ram_mib.to_string(),
                        h.vm_slots.to_string(),
                        h.agent_url.clone(),
                    ]
                })
                .collect(),
        );
        Ok(())
    }))
}

pub(crate) fn datacenter(cmd: DatacenterCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    finish(runtime()?.block_on(async {
        match cmd {
            DatacenterCommand::List { output } => {
                let dcs = client.datacenters().await?;
                if output == Output::Json {
                    return json(&dcs);
                }
                // Host counts are shown to administrators only.
                let counted = dcs.iter().any(|d| d.hosts.is_some());
                let mut head = vec!["NAME", "ID", "HOME POOLS"];
                if counted {
                    head.extend(["READY", "UNREACHABLE"]);
                }
                table(
                    &head,
                    dcs.iter()
                        .map(|d| {
                            let mut row =
                                vec![d.name.clone(), d.id.to_string(), d.home_pools.join(",")];
                            if let Some(h) = d.hosts {
                                row.extend([h.ready.to_string(), h.unreachable.to_string()]);
                            }
                            row
                        })
                        .collect(),
                );
                Ok(())
            }
            DatacenterCommand::Switch {
                datacenter,
                remove: true,
                ..
            } => {
                client.remove_switch(&datacenter).await?;
                println!("the switch of {datacenter} is forgotten");
                Ok(())
            }
            DatacenterCommand::Switch {
                datacenter,
                url,
                key_file,
                care_of,
                port,
                via,
                remove: false,
            } => {
                let req = api::RegisterSwitch {
                    url: url.unwrap_or_default(),
                    key_file: key_file.unwrap_or_default(),
                    care_of: care_of.unwrap_or_default(),
                    port: port.unwrap_or_default(),
                    via,
                };
                let s = client.register_switch(&datacenter, &req).await?;
                switch_table(std::slice::from_ref(&s));
                Ok(())
            }
            DatacenterCommand::Switches { output } => {
                let all = client.switches().await?;
                if output == Output::Json {
                    return json(&all);
                }
                switch_table(&all);
                Ok(())
            }
        }
    }))
}

fn switch_table(switches: &[api::Switch]) {
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    table(
        &[
            "DATACENTER",
            "URL",
            "CARE-OF",
            "PORT",
            "ANSWERS",
            "BINDINGS",
            "VISITORS",
        ],
        switches
            .iter()
            .map(|s| {
                vec![
                    s.datacenter.clone(),
                    s.url.clone(),
                    s.care_of.clone(),
                    s.port.clone(),
                    if s.reachable { "yes" } else { "NO" }.to_owned(),
                    count(s.bindings),
                    count(s.visitors),
                ]
            })
            .collect(),
    );
}

/// Revokes the token this CLI holds and forgets it.
pub(crate) fn logout() -> anyhow::Result<ExitCode> {
    let client = client()?;
    let code = finish(runtime()?.block_on(async { Ok(client.logout().await?) }))?;
    let path = credentials_path()?;
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    println!("logged out: the token is revoked");
    Ok(code)
}

fn expiry(at: Option<i64>) -> String {
    at.map_or_else(|| "never".to_owned(), |ms| format!("{}", ms / 1000))
}

pub(crate) fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    finish(runtime()?.block_on(async {
        match cmd {
            KeyCommand::List { output } => {
                let keys = client.ssh_keys().await?;
                if output == Output::Json {
                    return json(&keys);
                }
                table(
                    &["ID", "NAME", "FINGERPRINT", "TYPE"],
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.id.to_string(),
                                k.name.clone(),
                                k.fingerprint.clone(),
                                k.public_key
                                    .split(' ')
                                    .next()
                                    .unwrap_or_default()
                                    .to_owned(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            KeyCommand::Add { file, name } => {
                let text = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin().lock())
                        .context("reading standard input")?
                } else {
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                };
                let k = client
                    .add_ssh_key(&api::AddSshKey {
                        public_key: text,
                        name,
                    })
                    .await?;
                println!("key {} added: {} ({})", k.id, k.name, k.fingerprint);
                Ok(())
            }
            KeyCommand::Remove { id } => {
                client.remove_ssh_key(id).await?;
                println!("key {id} removed");
                Ok(())
            }
        }
    }))
}

pub(crate) fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    finish(runtime()?.block_on(async {
        match cmd {
            TokenCommand::List { output } => {
                let tokens = client.tokens().await?;
                if output == Output::Json {
                    return json(&tokens);
                }
                table(
                    &["ID", "NAME", "KIND", "SCOPE", "EXPIRES (UNIX S)", ""],
                    tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.to_string(),
                                t.name.clone(),
                                t.kind.clone(),
                                match (&t.scope, &t.host) {
                                    (api::TokenScope::Agent, Some(h)) => format!("agent {h}"),
                                    (api::TokenScope::Agent, None) => "agent".to_owned(),
                                    (api::TokenScope::User, _) => "user".to_owned(),
                                },
                                expiry(t.expires_at),
                                if t.current {
                                    "(this CLI)".to_owned()
                                } else {
                                    String::new()
                                },
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            TokenCommand::Create { name, days, agent } => {
                let t = client
                    .create_token(&api::CreateApiToken {
                        name,
                        expires_in_days: Some(days),
                        scope: agent.is_some().then_some(api::TokenScope::Agent),
                        host: agent,
                    })
                    .await?;
                println!("{}", t.token);
                eprintln!(
                    "token {} (shown once; expires {})",
                    t.id,
                    expiry(t.expires_at)
                );
                Ok(())
            }
            TokenCommand::Revoke { id } => {
                client.revoke_token(id).await?;
                println!("token {id} revoked");
                Ok(())
            }
        }
    }))
}

pub(crate) fn password(args: PasswordArgs) -> anyhow::Result<ExitCode> {
    let (current, new) = if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut lines = std::io::stdin().lock().lines();
        let mut next = || -> anyhow::Result<String> {
            Ok(lines
                .next()
                .context("two lines expected: the current password, then the new one")??
                .trim_end_matches(['\n', '\r'])
                .to_owned())
        };
        (next()?, next()?)
    } else {
        let current = rpassword::prompt_password("current password: ")?;
        let new = rpassword::prompt_password("new password: ")?;
        if rpassword::prompt_password("new password again: ")? != new {
            bail!("the new passwords differ");
        }
        (current, new)
    };
    let client = client()?;
    finish(runtime()?.block_on(async {
        client.change_password(&current, &new).await?;
        println!("password changed; your other tokens are revoked");
        Ok(())
    }))
}

pub(crate) fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let client = client()?;
    finish(runtime()?.block_on(async {
        let by_name = |users: &[api::User], name: &str| {
            users
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.id)
                .with_context(|| format!("no user is named {name:?}"))
        };
        match cmd {
            UserCommand::List { output } => {
                let users = client.users().await?;
                if output == Output::Json {
                    return json(&users);
                }
                table(
                    &[
                        "NAME", "ROLE", "STATE", "VMS", "VCPUS", "RAM MIB", "DESIGNS",
                    ],
                    users
                        .iter()
                        .map(|u| {
                            vec![
                                u.name.clone(),
                                format!("{:?}", u.role).to_lowercase(),
                                if u.disabled { "disabled" } else { "enabled" }.to_owned(),
                                u.quota.vms.to_string(),
                                u.quota.vcpus.to_string(),
                                u.quota.ram_mib.to_string(),
                                u.quota.designs.to_string(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            UserCommand::Disable { name } => {
                let id = by_name(&client.users().await?, &name)?;
                client.set_user_disabled(id, true).await?;
                println!("user {name} is disabled; their tokens are revoked");
                Ok(())
            }
            UserCommand::Enable { name } => {
                let id = by_name(&client.users().await?, &name)?;
                client.set_user_disabled(id, false).await?;
                println!("user {name} is enabled");
                Ok(())
            }
            UserCommand::Quota {
                name,
                vms,
                vcpus,
                ram_mib,
                public_addresses,
                designs,
                design_mib,
                private_addresses,
            } => {
                let users = client.users().await?;
                let id = by_name(&users, &name)?;
                let Some(user) = users.into_iter().find(|u| u.id == id) else {
                    bail!("no user {name}");
                };
                let q = user.quota;
                let quota = api::Quota {
                    vms: vms.unwrap_or(q.vms),
                    vcpus: vcpus.unwrap_or(q.vcpus),
                    ram_mib: ram_mib.unwrap_or(q.ram_mib),
                    public_addresses: public_addresses.unwrap_or(q.public_addresses),
                    designs: designs.unwrap_or(q.designs),
                    design_mib: design_mib.unwrap_or(q.design_mib),
                    private_addresses: private_addresses.unwrap_or(q.private_addresses),
                };
                let u = client.set_user_quota(id, &quota).await?;
                println!(
                    "user {name}: {} VMs, {} vCPUs, {} MiB RAM, {} public addresses, {} designs, {} MiB of designs, {} private addresses",
                    u.quota.vms,
                    u.quota.vcpus,
                    u.quota.ram_mib,
                    u.quota.public_addresses,
                    u.quota.designs,
                    u.quota.design_mib,
                    u.quota.private_addresses
                );
                Ok(())
            }
        }
    }))
}

#[cfg(test)]
mod console_tests {
    use super::console_news;

    #[test]
    fn only_what_is_new_is_printed() {
        assert_eq!(console_news("", "login: "), "login: ");
        assert_eq!(console_news("a\nlogin: ", "a\nlogin: alice\n"), "alice\n");
        // What was shown is out of the window: all of it (some again).
        assert_eq!(console_news("old\nlogin: ", "login: x"), "login: x");
        // A long console: matched by its last 512 bytes.
        let before = format!("{}\nprompt$ ", "y".repeat(2000));
        let now = format!("{}\nprompt$ ls\n", "y".repeat(1990));
        assert_eq!(console_news(&before, &now), "ls\n");
        // Nothing in common: everything.
        assert_eq!(console_news("zzz", "abc"), "abc");
    }
}

#[cfg(test)]
mod wait_tests {
    use super::in_progress;
    use neptune_api::JobState;
    use neptune_lifecycle::ViState;

    /// `vi wait` waits through an accepted VI whose deploy job has not
    /// started yet, and stops at a settled VI whatever its last job did.
    #[test]
    fn an_accepted_vi_with_a_running_job_is_in_progress() {
        assert!(in_progress(ViState::Accepted, Some(JobState::Running)));
        assert!(in_progress(ViState::Deploying, Some(JobState::Running)));
        assert!(in_progress(ViState::Deploying, None));
        assert!(in_progress(ViState::Running, Some(JobState::RollingBack)));
        assert!(!in_progress(ViState::Accepted, None));
        assert!(!in_progress(ViState::Running, Some(JobState::Succeeded)));
        assert!(!in_progress(ViState::Accepted, Some(JobState::RolledBack)));
        assert!(!in_progress(ViState::Failed, Some(JobState::Failed)));
    }
}
