//! From a parsed command line to the module that does the work.

use std::process::ExitCode;

use crate::cli::{Cli, Command, DnForm, KeysCommand, PoolCommand, TokenmapCommand};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Check { file } => crate::check::run(&g, file),
        Command::Explain {
            cert,
            dn,
            token,
            issuer,
            audience,
            jwks,
            token_mapfile,
            require_scope,
            user,
            from,
            json,
        } => {
            use crate::explain::Subject;
            let subject = match (cert, dn, token) {
                (Some(c), _, _) => Subject::Cert(c),
                (_, Some(d), _) => Subject::Dn(d),
                (_, _, Some(t)) => Subject::Token(
                    t,
                    crate::tokens::AdHoc {
                        issuer,
                        audience,
                        jwks,
                        token_mapfile,
                        require_scope,
                    },
                ),
                (None, None, None) => {
                    anyhow::bail!("give --cert CHAIN.pem, --dn DN or --token FILE")
                }
            };
            crate::explain::run(&g, subject, (user, from), json)
        }
        Command::Keys { command } => {
            let config = crate::settings::effective_config(&g)?;
            let now = crate::settings::validation_time(&g)?;
            match command {
                KeysCommand::Refresh { issuer } => {
                    crate::tokens::keys_refresh(&config, issuer.as_deref(), now)
                }
                KeysCommand::Show { json } => crate::tokens::keys_show(&config, json, now),
            }
        }
        Command::Tokenmap { command } => match command {
            TokenmapCommand::Check { file } => {
                crate::tokens::tokenmap_check(&crate::settings::effective_config(&g)?, file)
            }
            TokenmapCommand::ImportCondor { file } => crate::tokens::tokenmap_import_condor(&file),
        },
        Command::Pool { command } => match command {
            PoolCommand::List { json } => crate::pool::list(&g, json),
            PoolCommand::Release {
                account,
                dn,
                token,
                key,
            } => crate::pool::release(
                &g,
                crate::pool::Whose {
                    account,
                    dn,
                    token,
                    key,
                },
            ),
            PoolCommand::Expire { older_than } => crate::pool::expire(&g, &older_than),
        },
        Command::Suspend { who } => crate::suspend::suspend(
            &g,
            crate::suspend::entry(who.dn.as_deref(), &who.token, who.account.as_deref())?,
        ),
        Command::Unsuspend { who } => crate::suspend::unsuspend(
            &g,
            crate::suspend::entry(who.dn.as_deref(), &who.token, who.account.as_deref())?,
        ),
        Command::Add { dn, account } => crate::edit::add(&g, &dn, &account),
        Command::Remove { dn, account } => crate::edit::remove(&g, &dn, account.as_deref()),
        Command::List { json } => crate::edit::list(&g, json),
        Command::ConvertDn { dn, to } => {
            let parsed = hpccert_core::identity::dn::DistinguishedName::parse(&dn)
                .map_err(|e| anyhow::anyhow!("cannot parse DN {dn:?}: {e}"))?;
            println!(
                "{}",
                match to {
                    DnForm::Rfc4514 => parsed.to_rfc4514(),
                    DnForm::Openssl => parsed.to_slash(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(args) => crate::sync::run(&g, args),
        Command::Demo { dir } => crate::demo::run(dir),
    }
}
