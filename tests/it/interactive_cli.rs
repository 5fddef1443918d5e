//! `sandboxd exec -it` as a person uses it, in a real terminal (tmux):
//! a shell in the sandbox, a command typed and its output seen, the window
//! resized, the shell left, and the caller's terminal as it was.

use std::process::Stdio;
use std::time::Instant;

use crate::support::{self, TestDaemon, KEY, TIMEOUT};

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn available() -> bool {
        std::process::Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new("tmux");
        command
            .args(["-u", "-f", "/dev/null", "-S"])
            .arg(&self.socket)
            .env_remove("TMUX")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "it", "-l", line]);
        self.run(&["send-keys", "-t", "it", "Enter"]);
    }

    /// Waits until the screen holds `needle` (`count` times); the screen.
    async fn wait_screen(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let screen = self.run(&["capture-pane", "-p", "-J", "-t", "it"]);
            if screen.matches(needle).count() >= count {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the screen:\n{screen}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// `sandboxd exec -it -- bash` in tmux: a prompt of the sandbox's shell, a
/// command's output, `stty size` following a resize of the window, `exit`
/// ending the session with the shell's status, and the terminal's
/// settings afterwards what they were before.
#[tokio::test]
async fn exec_it_gives_a_working_shell_in_a_real_terminal() {
    if !Tmux::available() {
        eprintln!("skipped: exec_it_gives_a_working_shell_in_a_real_terminal needs tmux");
        return;
    }
    let daemon = TestDaemon::start().await;
    let tmux = Tmux {
        socket: daemon.dir.path().join("tmux.sock"),
    };
    let out = tmux
        .command()
        .env("SANDBOXD_URL", &daemon.url)
        .env("SESSION_API_KEY", KEY)
        .env("TERM", "xterm-256color")
        .env("PS1", "outer$ ")
        .args(["new-session", "-d", "-s", "it", "-x", "90", "-y", "30"])
        .args(["bash", "--norc", "--noprofile"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmux.wait_screen("outer$", 1).await;
    tmux.type_line("before=$(stty -g)");
    tmux.type_line(&format!(
        "'{}' exec -it --env PS1='in''ner$ ' -- bash --norc --noprofile",
        support::bin()
    ));
    // The prompt itself: the typed line says `in''ner$`, so it does not
    // count (input typed before the terminal goes raw is discarded).
    tmux.wait_screen("inner$", 1).await;
    tmux.type_line("echo answer-$((6*7)); tty; stty size");
    // The next prompt: all three commands have printed.
    let screen = tmux.wait_screen("inner$", 2).await;
    assert!(screen.contains("answer-42"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(
        screen.contains("30 90") || screen.contains("29 90"),
        "{screen}"
    );
    tmux.run(&["resize-window", "-t", "it", "-x", "120", "-y", "35"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tmux.type_line("stty size | sed 's/^/size=/'");
    tmux.wait_screen("size=35 120", 1).await;
    let prompts = tmux
        .wait_screen("outer$", 1)
        .await
        .matches("outer$")
        .count();
    tmux.type_line("exit 4");
    // Back at the caller's shell (input typed before is the session's).
    tmux.wait_screen("outer$", prompts + 1).await;
    tmux.type_line("echo exit=$?; [ \"$(stty -g)\" = \"$before\" ] && echo terminal-''sane");
    let screen = tmux.wait_screen("terminal-sane", 1).await;
    assert!(screen.contains("exit=4"), "{screen}");
}
