//! `sandboxd-shim`: the run shim (`runs::shim`) as an executable of its
//! own. The daemon starts one per run (or keeps one warm) as
//! `sandboxd-shim shim`, the same arguments as `sandboxd shim`, which it
//! falls back to when this file is not installed beside it. It maps a
//! tenth of `sandboxd`'s code, so it starts, forks its command and sits
//! idle in less time and memory.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (None, _) => sandboxd::runs::shim::main(),
        (Some(first), None) if first == "shim" => sandboxd::runs::shim::main(),
        (Some(first), None) if first == "--version" => {
            // The daemon compares this line with its own version before
            // using this executable.
            let line = format!("{}\n", sandboxd::runs::shim::VERSION_LINE);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        _ => {
            let usage = "usage: sandboxd-shim [shim | --version] (started by sandboxd)\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), usage.as_bytes());
            std::process::ExitCode::from(2)
        }
    }
}
