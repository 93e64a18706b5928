//! How every binary answers a bad command line: one line on stderr naming the problem, and exit status 2.
//! Help and version still print in full, with status 0.
//!
//! This module owns that answer only; each binary's `config.rs` owns its flags and their checks.

use std::ffi::OsString;
use std::fmt::Display;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

/// The exit status of a refused command line or setting: clap's, and the shells' convention for misuse.
pub const USAGE_EXIT_CODE: i32 = 2;

/// Parses the command line and environment into `P`, or exits: `--help` and `--version` print as clap
/// renders them and exit 0; anything else prints `{name}: {problem} (see --help)` on one line and exits 2.
pub fn parse_or_exit<P: Parser>() -> P {
    parse_from_or_exit(std::env::args_os())
}

/// [`parse_or_exit`] over given arguments, the first being the program name.
pub fn parse_from_or_exit<P, I, T>(args: I) -> P
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match P::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(error) if !error.use_stderr() => {
            // Help and version: what was asked for, in full, on stdout.
            let _ = error.print();
            std::process::exit(0);
        }
        Err(error) => exit_invalid::<P>(one_line(&error)),
    }
}

/// Prints `{name}: {message}` on stderr and exits 2: for a setting clap accepted but the binary's own
/// checks refuse (values that depend on each other, a URL's scheme).
pub fn exit_invalid<P: CommandFactory>(message: impl Display) -> ! {
    eprintln!("{}: {message}", P::command().get_name());
    std::process::exit(USAGE_EXIT_CODE);
}

/// The problem a clap error names, on one line and without clap's `error: ` prefix, with the possible
/// values when clap lists them and a pointer to `--help`. clap's own message spans several lines (usage,
/// tips); the first names the problem.
pub fn one_line(error: &clap::Error) -> String {
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "arguments are missing (see --help)".to_string();
    }
    let rendered = error.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let problem = first.strip_prefix("error: ").unwrap_or(first);
    match lines.find(|line| line.starts_with("[possible values:")) {
        Some(possible) => format!("{problem} {possible} (see --help)"),
        None => format!("{problem} (see --help)"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::units::parse_duration;

    #[derive(Debug, Parser)]
    #[command(name = "example")]
    struct Cli {
        /// A duration.
        #[arg(long, env = "EXAMPLE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        /// A choice.
        #[arg(long, value_enum, default_value = "safe")]
        mode: Mode,
    }

    /// The choices of `--mode`.
    #[derive(Debug, Clone, Copy, clap::ValueEnum)]
    enum Mode {
        /// Quick.
        Fast,
        /// Careful.
        Safe,
    }

    #[test]
    fn errors_are_one_line_naming_the_problem() {
        for args in [&["example", "--bogus"][..], &["example", "--timeout", "5"], &["example", "--timeout"]] {
            let error = Cli::try_parse_from(args).unwrap_err();
            let line = one_line(&error);
            assert!(!line.contains('\n'), "{line}");
            assert!(!line.starts_with("error"), "{line}");
            assert!(line.ends_with("(see --help)"), "{line}");
        }
        let error = Cli::try_parse_from(["example", "--mode", "sometimes"]).unwrap_err();
        assert_eq!(
            one_line(&error),
            "invalid value 'sometimes' for '--mode <MODE>' [possible values: fast, safe] (see --help)"
        );
        let error = Cli::try_parse_from(["example", "--timeout", "5"]).unwrap_err();
        assert!(one_line(&error).contains("--timeout"), "{}", one_line(&error));
        assert!(one_line(&error).contains("needs a unit"), "{}", one_line(&error));
    }

    #[test]
    fn good_arguments_parse() {
        let cli: Cli = parse_from_or_exit(["example", "--timeout", "250ms"]);
        assert_eq!(cli.timeout, Duration::from_millis(250));
    }
}
