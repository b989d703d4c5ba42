//! `agentmesh config`: view and change contexts.

use std::process::ExitCode;

use crate::{
    args::{ConfigCommand, Global, SetContextArgs},
    config::{self, ConfigFile, Context},
    failure::Failure,
    output::Printer,
};

pub fn run(global: &Global, printer: &Printer, command: ConfigCommand) -> Result<ExitCode, Failure> {
    let path = config::path(global);
    let mut file = ConfigFile::load(&path)?;
    match command {
        ConfigCommand::View => {
            let shown = file.redacted();
            if printer.structured() {
                printer.record(&shown)?;
            } else {
                say!("# {}", path.display());
                let text = toml::to_string_pretty(&shown).map_err(|e| Failure::Failed(e.to_string()))?;
                say!("{}", text.trim_end());
            }
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(name) => say!("{name}"),
            None => return Err(Failure::Config("no current context".to_owned())),
        },
        ConfigCommand::UseContext { name } => {
            if !file.contexts.contains_key(&name) {
                return Err(Failure::Config(format!("no context named {name:?}")));
            }
            file.current_context = Some(name.clone());
            file.save(&path)?;
            say!("current context: {name}");
        }
        ConfigCommand::SetContext(args) => {
            let name = args.name.clone();
            let existing = file.contexts.remove(&name);
            let context = set(existing, args)?;
            file.contexts.insert(name.clone(), context);
            file.current_context.get_or_insert_with(|| name.clone());
            file.save(&path)?;
            say!("context {name} saved in {}", path.display());
        }
        ConfigCommand::DeleteContext { name } => {
            if file.contexts.remove(&name).is_none() {
                return Err(Failure::Config(format!("no context named {name:?}")));
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            file.save(&path)?;
            say!("context {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The context `args` describe, on top of what it was: what is not given
/// stays as it was.
fn set(existing: Option<Context>, args: SetContextArgs) -> Result<Context, Failure> {
    let mut context = existing.unwrap_or_default();
    if let Some(host) = &args.host {
        let on_host = Context::on_host(host);
        context.registry = on_host.registry;
        context.provisioner = on_host.provisioner;
        context.gateway = on_host.gateway;
        context.scheduler = on_host.scheduler;
    }
    for (address, given) in [
        (&mut context.registry, args.registry),
        (&mut context.provisioner, args.provisioner),
        (&mut context.gateway, args.gateway),
        (&mut context.scheduler, args.scheduler),
    ] {
        if let Some(given) = given {
            *address = given;
        }
    }
    if args.token.is_some() {
        context.token = args.token;
        context.token_file = None;
    }
    if args.token_file.is_some() {
        context.token_file = args.token_file;
        context.token = None;
    }
    if args.ca_file.is_some() {
        context.ca_file = args.ca_file;
    }
    let missing: Vec<&str> = [
        ("--registry", &context.registry),
        ("--provisioner", &context.provisioner),
        ("--gateway", &context.gateway),
        ("--scheduler", &context.scheduler),
    ]
    .into_iter()
    .filter(|(_, address)| address.is_empty())
    .map(|(flag, _)| flag)
    .collect();
    if !missing.is_empty() {
        return Err(Failure::Usage(format!("give --host, or {} for the context", missing.join(", "))));
    }
    Ok(context)
}
