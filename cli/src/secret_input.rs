//! Passwords and passcodes: from stdin (`--password-stdin`), the environment, or a prompt on a
//! terminal — never from the command line, where the process list would show them.

use crate::error::input;
use anyhow::Result;
use std::io::{BufRead, IsTerminal};
use zeroize::Zeroizing;

/// Where a secret may come from.
pub struct Source<'a> {
    /// Read the first line of stdin.
    pub stdin: bool,
    /// The environment variable that may hold it.
    pub env: &'a str,
    /// The prompt on a terminal.
    pub prompt: &'a str,
    /// The flag to mention when nothing was given.
    pub flag: &'a str,
}

/// Reads the secret from the first source that has it.
pub fn read(src: &Source<'_>, confirm: bool) -> Result<Zeroizing<String>> {
    if src.stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let s = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        if s.is_empty() {
            return Err(input(format!("{} read an empty line from stdin", src.flag)));
        }
        return Ok(s);
    }
    if let Some(v) = std::env::var_os(src.env) {
        let s = Zeroizing::new(v.to_string_lossy().into_owned());
        if !s.is_empty() {
            return Ok(s);
        }
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(src.prompt)?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("Repeat it: ")?);
            if *first != *again {
                return Err(input("the two entries differ; try again"));
            }
        }
        if first.is_empty() {
            return Err(input("nothing entered"));
        }
        return Ok(first);
    }
    Err(input(format!(
        "no terminal to ask on: pass {} (and pipe it in) or set {}",
        src.flag, src.env
    )))
}
