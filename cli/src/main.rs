//! `agentmesh`: the mesh's command line. Every command but `dev`, `config`
//! and `completion` talks to a context's services over their gRPC contracts
//! (see `args.rs` for the commands, `config.rs` for contexts).

// First, so that its `say!` is in scope in the modules after it.
#[macro_use]
mod output;
mod args;
mod commands;
mod config;
mod connect;
mod failure;

use std::{io::Write, process::ExitCode};

use clap::{CommandFactory, Parser};

use crate::{
    args::{Cli, Command},
    config::ConfigFile,
    connect::Mesh,
    failure::Failure,
    output::Printer,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return report(&Failure::Io(error)),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => report(&failure),
    }
}

/// One line on stderr, never a debug dump; the exit code tells scripts what
/// kind of failure it was.
fn report(failure: &Failure) -> ExitCode {
    // A reader of stdout that went away is no failure (see `output::say`).
    if let Failure::Io(error) = failure
        && error.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let mut stderr = anstream::stderr();
    let styled = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    let label = if styled { "\u{1b}[1;31merror\u{1b}[0m" } else { "error" };
    // Text from services (reasons, hints) may span lines; a failure is one.
    let line = failure.to_string().replace(['\r', '\n'], " ");
    let _ = writeln!(stderr, "{label}: {line}");
    failure.exit_code()
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let printer = Printer::new(cli.global.output);
    let mesh = || -> Result<Mesh, Failure> {
        let file = ConfigFile::load(&config::path(&cli.global))?;
        Ok(Mesh { resolved: file.resolve(&cli.global)? })
    };
    match cli.command {
        Command::Workspaces(command) => commands::workspaces::run(&mesh()?, &printer, command).await,
        Command::Send(args) => commands::send::run(&mesh()?, &printer, args).await,
        Command::Schedules(command) => commands::schedules::run(&mesh()?, &printer, command).await,
        Command::Queue(command) => commands::queue::run(&mesh()?, &printer, command).await,
        Command::Events(args) => commands::events::run(&mesh()?, &printer, args).await,
        Command::Runtimes => commands::mesh::runtimes(&mesh()?, &printer).await,
        Command::Policy(command) => commands::mesh::policy(&mesh()?, &printer, command).await,
        Command::Status => commands::mesh::status(&mesh()?, &printer).await,
        Command::Config(command) => commands::config::run(&cli.global, &printer, command),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "agentmesh", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => commands::dev::run(&cli.global, args).await,
    }
}
