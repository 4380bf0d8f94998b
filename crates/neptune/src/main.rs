//! The `neptune` command: the CLI and every Neptune daemon as a subcommand.
//! Thin by design: parse arguments, call a library, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "neptune",
    version,
    about = "Neptune: Infrastructure as a Service for whole Virtual Infrastructures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a whole Neptune here: a Manager on SQLite and datacenters of
    /// simulated (or libvirt) hosts.
    Up(cmd::up::UpArgs),
    /// Run the Manager daemon.
    Manager(cmd::up::ManagerArgs),
    /// Log in to a Manager; stores an API token for the other commands.
    Login(cmd::client::LoginArgs),
    /// Revoke the stored API token and forget it.
    Logout,
    /// Change your password (your other tokens are revoked).
    Password(cmd::client::PasswordArgs),
    /// Your API tokens: list, create (also an Agent's), revoke.
    #[command(subcommand)]
    Token(cmd::client::TokenCommand),
    /// Your SSH public keys, which the guests of your VIs accept: list, add, remove.
    #[command(subcommand)]
    Key(cmd::client::KeyCommand),
    /// Users (administrators): list, disable, enable.
    #[command(subcommand)]
    User(cmd::client::UserCommand),
    /// Virtual Infrastructures: create, request, plan, accept, wait, terminate.
    #[command(subcommand)]
    Vi(cmd::client::ViCommand),
    /// The template repository.
    #[command(subcommand)]
    Template(cmd::client::TemplateCommand),
    /// Hosts and their Agents (administrators).
    #[command(subcommand)]
    Host(cmd::client::ListCommand),
    /// The datacenters of the Service Switching domain.
    #[command(subcommand)]
    Datacenter(cmd::client::DatacenterCommand),
    /// Design Virtual Infrastructure topologies: check, convert, generate.
    #[command(subcommand)]
    Topology(cmd::topology::TopologyCommand),
    /// Place a VI graph onto hosts: the paper's KL or the production solver.
    #[command(subcommand)]
    Placement(cmd::placement::PlacementCommand),
    /// Plan addresses: a subnet per link, an address per interface, Home Addresses.
    #[command(subcommand)]
    Address(cmd::address::AddressCommand),
    /// Run an Edge Service Switch: Mobility Binding Table, tunnels, control API.
    Switch(cmd::switch::Args),
    /// Run the Agent of one host: the Agent API over its hypervisor.
    Agent(cmd::agent::Args),
}

/// A reader that goes away (`neptune vi list | head -1`) has what it wanted:
/// the command ends quietly with 0, as a filter does, instead of panicking
/// on the closed pipe. Rust ignores SIGPIPE, so the write fails with EPIPE
/// and `println!` panics; restoring SIGPIPE instead would also let a
/// daemon die of a closed socket.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            #[allow(
                clippy::disallowed_methods,
                reason = "a panic hook cannot return from main; stdout is gone, nothing is left to flush"
            )]
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => cmd::up::up(a),
        Command::Manager(a) => cmd::up::manager(a),
        Command::Login(a) => cmd::client::login(a),
        Command::Logout => cmd::client::logout(),
        Command::Password(a) => cmd::client::password(a),
        Command::Token(c) => cmd::client::token(c),
        Command::Key(c) => cmd::client::key(c),
        Command::User(c) => cmd::client::user(c),
        Command::Vi(c) => cmd::client::vi(c),
        Command::Template(c) => cmd::client::template(c),
        Command::Host(c) => cmd::client::host(c),
        Command::Datacenter(c) => cmd::client::datacenter(c),
        Command::Topology(c) => cmd::topology::run(c),
        Command::Placement(c) => cmd::placement::run(c),
        Command::Address(c) => cmd::address::run(c),
        Command::Switch(a) => cmd::switch::run(a),
        Command::Agent(a) => cmd::agent::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("neptune: {err:#}");
            }
            ExitCode::from(2)
        }
    }
}

/// jemalloc for every allocation of the process, not glibc's malloc: Rust's
/// through the global allocator, and the C libraries' (SQLite, libvirt)
/// through `malloc` itself, which jemalloc replaces
/// (`unprefixed_malloc_on_supported_platforms`). Under a burst of accepts
/// (64 clients, `bench/scale`), a Manager on glibc's malloc accepted 72-80
/// VIs/s on the benchmark's machine, and 93-104 on jemalloc. Its
/// background thread gives freed pages back to the kernel once they have
/// stayed unused for [`malloc_conf`]'s `dirty_decay_ms`. With SQLite's
/// page caches and statements left to glibc, its heaps kept what they had
/// freed scattered among what they still held (about 4 MiB after 1 000
/// VIs deployed and terminated, `malloc_trim` notwithstanding).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation: a background thread
/// gives freed pages back to the kernel after a second unused (jemalloc's
/// default is ten seconds), for good (`muzzy_decay_ms:0`: no lazy second
/// stage that the kernel may or may not reclaim).
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a C string literal lives, unchanged, for the whole program.
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });
