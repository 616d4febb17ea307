//! `remsim-demo` (run by `scripts/demo`): the whole remsim system on one
//! machine, on soft SIMs, without root or hardware. It starts remsim-server
//! (SQLite in the demo folder), one remsim-bankd with 8 soft SIMs and N
//! `remsim-client shell` modems, maps them through the gRPC API, has each
//! modem read its card's ICCID and IMSI and run a USIM AUTHENTICATE over the
//! real RSPRO path, remaps two modems to other cards, then stays up showing
//! live events (`remsimctl watch`) until Ctrl-C or `--duration`, and stops
//! everything it started.

mod api;
mod modem;
mod procs;
mod report;
mod usim;

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use simcard::CardProfile;
use tokio::signal::unix::{SignalKind, signal};

use crate::modem::{Modem, NO_CARD_ATR, Reading};
use crate::procs::{Proc, Programs};
use crate::report::{Phase, Row};

/// Soft SIMs in the demo's bank.
const CARDS: u32 = 8;
/// The demo's bank id.
const BANK: u32 = 1;
/// How long a modem may wait for its card, after a map or a remap.
const CARD_BOUND: Duration = Duration::from_secs(30);
/// The file that marks a folder as the demo's own.
const DIR_MARKER: &str = ".remsim-demo";
/// The programs the demo runs.
const PROGRAMS: [&str; 4] = [
    "remsim-server",
    "remsim-bankd",
    "remsim-client",
    "remsimctl",
];

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables and messages for people.
    Text,
    /// One JSON object per result line on stdout; everything else on stderr.
    Json,
}

#[derive(Parser)]
#[command(
    name = "remsim-demo",
    version,
    about = "The whole remsim system on soft SIMs: server, bankd, clients, remapped live"
)]
struct Args {
    /// Number of modems (remsim-client shell), 1..8.
    #[arg(long, env = "REMSIM_DEMO_CLIENTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=CARDS as i64))]
    clients: u32,
    /// Stay up this many seconds after the remap, then exit (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    /// First of three ports on 127.0.0.1: gRPC API, +1 RSPRO, +2 bankd.
    #[arg(long, default_value_t = 9997, value_parser = clap::value_parser!(u16).range(1..=65533))]
    base_port: u16,
    /// Demo folder: database, soft SIM profiles, logs (emptied at each run).
    #[arg(long, env = "REMSIM_DEMO_DIR", default_value = "remsim-demo")]
    dir: PathBuf,
    /// Where the remsim programs are (default: beside remsim-demo).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Where the demo's words go: stdout for people, stderr beside JSON results.
struct Say {
    json: bool,
}

impl Say {
    fn line(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn rows(&self, phase: Phase, rows: &[Row]) {
        if self.json {
            let mut out = std::io::stdout().lock();
            for row in rows {
                let _ = writeln!(out, "{}", report::json_line(phase, row));
            }
            let _ = out.flush();
        } else {
            print!("{}", report::table(rows));
        }
    }
}

/// A path as the user would type it: relative to the working directory when under it.
fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// How a run ended.
enum End {
    /// Everything worked; stopped by Ctrl-C, SIGTERM or --duration.
    Done,
    /// Some modem could not read or authenticate its card.
    ReadFailed,
}

struct Demo {
    args: Args,
    say: Say,
    programs: Programs,
    dir: PathBuf,
    cards: Vec<CardProfile>,
    /// Every program started, in start order.
    procs: Vec<Proc>,
}

impl Demo {
    fn ports(&self) -> (u16, u16, u16) {
        let p = self.args.base_port;
        (p, p + 1, p + 2)
    }

    /// Starts program `name` logging to `log` in the demo folder (its
    /// stdout too with `stdout_to_log`), announces it with its pid and
    /// `what` it is, and keeps it to be stopped.
    fn launch(
        &mut self,
        name: &str,
        cmd: tokio::process::Command,
        log: &str,
        stdout_to_log: bool,
        what: &str,
    ) -> anyhow::Result<&mut Proc> {
        let proc = self
            .programs
            .spawn_logged(name, cmd, &self.dir.join(log), stdout_to_log)?;
        self.say.line(&format!(
            "  {:<14} pid {:<7} {:<40} log {}",
            proc.name,
            proc.pid(),
            what,
            shown(&proc.log)
        ));
        let index = self.procs.len();
        self.procs.push(proc);
        Ok(&mut self.procs[index])
    }

    /// Fails when a started program has ended, naming it and its last log lines.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                anyhow::bail!(
                    "{} ended unexpectedly ({status}); last lines of {}:\n{}",
                    p.name,
                    shown(&p.log),
                    p.log_tail()
                );
            }
        }
        Ok(())
    }

    /// Writes the soft SIM profiles and removes the previous run's database.
    /// A folder the demo made (it holds the marker) or an empty one is
    /// emptied of the last run's files; any other is refused, so that a
    /// mistyped `--dir` never deletes somebody's database.
    fn prepare_dir(&mut self) -> anyhow::Result<()> {
        let shown_dir = self.dir.display().to_string();
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating the demo folder {shown_dir}"))?;
        let marker = self.dir.join(DIR_MARKER);
        let entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {shown_dir}"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {shown_dir}"))?;
        if !entries.is_empty() && !marker.exists() {
            anyhow::bail!(
                "{shown_dir} is not empty and not a demo folder (no {DIR_MARKER}); choose a new folder with --dir"
            );
        }
        for path in entries.iter().filter(|p| p.is_file() && **p != marker) {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::write(
            &marker,
            "made by remsim-demo, which empties this folder at each run\n",
        )
        .with_context(|| format!("writing {}", marker.display()))?;
        self.cards = CardProfile::generate(1, CARDS);
        let profiles = self.dir.join("cards.toml");
        std::fs::write(&profiles, simcard::profile::to_toml(&self.cards))
            .with_context(|| format!("writing {}", profiles.display()))?;
        Ok(())
    }

    async fn start_core(&mut self) -> anyhow::Result<api::Api> {
        let (api_port, rspro_port, bankd_port) = self.ports();
        let mut cmd = self.programs.command("remsim-server");
        cmd.arg("--db")
            .arg(self.dir.join("remsim.db"))
            .args(["--rspro-listen", &format!("127.0.0.1:{rspro_port}")])
            .args(["--api-listen", &format!("127.0.0.1:{api_port}")]);
        self.launch(
            "remsim-server",
            cmd,
            "server.log",
            true,
            &format!("API 127.0.0.1:{api_port}, RSPRO 127.0.0.1:{rspro_port}"),
        )?;
        let mut api = api::Api::connect(api_port, || self.check_alive()).await?;

        let mut cmd = self.programs.command("remsim-bankd");
        cmd.args(["-i", "127.0.0.1", "-p", &rspro_port.to_string()])
            .args([
                "-b",
                &BANK.to_string(),
                "-n",
                &CARDS.to_string(),
                "-N",
                "remsim-demo-bank",
            ])
            .args(["-I", "127.0.0.1", "-P", &bankd_port.to_string()])
            .args(["--backend", "soft", "--soft-profiles"])
            .arg(self.dir.join("cards.toml"));
        self.launch(
            "remsim-bankd",
            cmd,
            "bankd.log",
            true,
            &format!("bank {BANK}, {CARDS} soft SIMs, 127.0.0.1:{bankd_port}"),
        )?;
        api.wait_for_bank(BANK, || self.check_alive()).await?;
        api.set_bank_endpoint(BANK, format!("127.0.0.1:{bankd_port}"))
            .await?;
        Ok(api)
    }

    fn start_modem(&mut self, client_id: u32) -> anyhow::Result<Modem> {
        let (_, rspro_port, _) = self.ports();
        let mut cmd = self.programs.command("remsim-client");
        cmd.args(["-i", "127.0.0.1", "-p", &rspro_port.to_string()])
            .args(["-c", &client_id.to_string(), "-n", "0"])
            .args(["-a", &NO_CARD_ATR.replace(' ', ""), "shell"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let log = format!("client-{client_id}.log");
        let what = format!("client {client_id}:0, shell frontend");
        let proc = self.launch("remsim-client", cmd, &log, false, &what)?;
        let (Some(stdin), Some(stdout)) = (proc.child.stdin.take(), proc.child.stdout.take())
        else {
            anyhow::bail!("remsim-client started without its pipes");
        };
        Ok(Modem::new(stdin, stdout))
    }

    /// Each modem waits for its card and reads it, all at once.
    async fn read_all(&self, modems: &mut [(u32, &mut Modem)], after_loss: bool) -> Vec<Reading> {
        let cards = &self.cards;
        let reads = modems.iter_mut().map(|(_, modem)| async move {
            match modem.wait_for_card(CARD_BOUND, after_loss).await {
                Ok(_atr) => modem.read_card(cards).await,
                Err(why) => Reading::failed(why),
            }
        });
        futures::future::join_all(reads).await
    }

    async fn run(&mut self) -> anyhow::Result<End> {
        let n = self.args.clients;
        let (api_port, ..) = self.ports();
        self.say.line(&format!(
            "remsim demo: 1 server, 1 bankd with {CARDS} soft SIMs, {n} modem(s) on 127.0.0.1; folder {}",
            shown(&self.dir)
        ));
        let mut api = self.start_core().await?;

        // Client i:0 gets bank slot i-1.
        let mut maps: Vec<(u32, u32)> = (1..=n).map(|c| (c, c - 1)).collect();
        for &(client, bank_slot) in &maps {
            api.create(client, (BANK, bank_slot)).await?;
        }
        let mut modems = Vec::new();
        for &(client, _) in &maps {
            modems.push((client, self.start_modem(client)?));
        }
        self.say.line(&format!(
            "slot maps created through the gRPC API (127.0.0.1:{api_port}): {}",
            maps.iter()
                .map(|(c, s)| format!("client {c}:0 -> bank {BANK}:{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.say
            .line("\nEach modem reads its remote card (client -> bankd -> soft SIM, over RSPRO):");
        let mut refs: Vec<(u32, &mut Modem)> = modems.iter_mut().map(|(c, m)| (*c, m)).collect();
        let readings = self.read_all(&mut refs, false).await;
        let rows: Vec<Row> = maps
            .iter()
            .zip(readings)
            .map(|(&(client, slot), reading)| Row {
                client: (client, 0),
                bank: (BANK, slot),
                reading,
                was: None,
            })
            .collect();
        self.say.rows(Phase::Initial, &rows);
        let mut failed = rows.iter().any(|r| !r.reading.ok());

        // Remap the first two modems: to spare cards while there are some,
        // else to each other's card.
        let movers = n.min(2) as usize;
        let spares: Vec<u32> = (n..CARDS).collect();
        let targets: Vec<u32> = if spares.len() >= movers {
            spares[..movers].to_vec()
        } else {
            (0..movers).map(|i| maps[(i + 1) % movers].1).collect()
        };
        self.say.line(&format!(
            "\nRemapping through the API (delete + create): {}",
            maps[..movers]
                .iter()
                .zip(&targets)
                .map(|((c, from), to)| format!(
                    "client {c}:0 from bank {BANK}:{from} to {BANK}:{to}"
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for &(client, _) in &maps[..movers] {
            api.delete_client_map(client).await?;
        }
        for (i, &to) in targets.iter().enumerate() {
            api.create(maps[i].0, (BANK, to)).await?;
            maps[i].1 = to;
        }
        let mut refs: Vec<(u32, &mut Modem)> =
            modems[..movers].iter_mut().map(|(c, m)| (*c, m)).collect();
        let readings = self.read_all(&mut refs, true).await;
        let remapped: Vec<Row> = maps[..movers]
            .iter()
            .zip(readings)
            .zip(&rows)
            .map(|((&(client, slot), reading), before)| Row {
                client: (client, 0),
                bank: (BANK, slot),
                reading,
                was: before.reading.iccid.clone(),
            })
            .collect();
        self.say.rows(Phase::Remapped, &remapped);
        failed |= remapped.iter().any(|r| !r.reading.ok());
        if failed {
            self.say.line(&format!(
                "\nSome modems could not read their cards: see the logs in {}",
                shown(&self.dir)
            ));
            return Ok(End::ReadFailed);
        }
        // What to try next: move the last modem to a free card (or back
        // to its own after a delete).
        let (last, last_slot) = maps[maps.len() - 1];
        let free = (0..CARDS)
            .find(|s| maps.iter().all(|m| m.1 != *s))
            .unwrap_or(last_slot);
        self.stay_up(modems, (last, (BANK, free))).await
    }

    /// Shows the commands to try and the live events until the end.
    /// `example`: a client and a bank slot to map it to after deleting its map.
    async fn stay_up(
        &mut self,
        mut modems: Vec<(u32, Modem)>,
        example: (u32, (u32, u32)),
    ) -> anyhow::Result<End> {
        let (client, (bank, slot)) = example;
        // The modems stay powered, their output read and dropped, so that
        // remaps made from a second terminal never block a client.
        for (_, modem) in &mut modems {
            modem.discard_output();
        }
        let (api_port, ..) = self.ports();
        let server = format!("http://127.0.0.1:{api_port}");
        let ctl = shown(&self.programs.path("remsimctl"));
        self.say.line(&format!(
            "\nThe system stays up. In a second terminal, try:\n  \
             export REMSIM_SERVER={server}\n  \
             {ctl} bank list\n  \
             {ctl} client list\n  \
             {ctl} slotmap list\n  \
             {ctl} slotmap delete --client {client}:0\n  \
             {ctl} slotmap create {bank}:{slot} {client}:0\n  \
             grpcurl -plaintext 127.0.0.1:{api_port} list     (if you have grpcurl)\n\
             Logs: {dir}/*.log. Live events follow (remsimctl watch); Ctrl-C ends the demo.",
            dir = shown(&self.dir)
        ));
        let mut cmd = self.programs.command("remsimctl");
        cmd.args(["--server", &server, "watch"]);
        if self.say.json {
            let stderr = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .context("stderr")?;
            cmd.stdout(Stdio::from(stderr));
        } else {
            cmd.stdout(Stdio::inherit());
        }
        self.launch("remsimctl", cmd, "watch.log", false, "watch (events below)")?;

        let duration = self.args.duration;
        let until = async move {
            match duration {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = &mut until => return Ok(End::Done),
                _ = tick.tick() => self.check_alive()?,
            }
        }
    }

    /// Stops every program: modems and watch first, then bankd, then server.
    async fn stop_all(&mut self) {
        let mut procs = std::mem::take(&mut self.procs);
        let server_and_bankd = procs.len().min(2);
        let rest = procs.split_off(server_and_bankd);
        futures::future::join_all(rest.into_iter().map(|mut p| async move { p.stop().await }))
            .await;
        while let Some(mut p) = procs.pop() {
            p.stop().await;
        }
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP, caught from the moment this is made.
struct StopSignals([tokio::signal::unix::Signal; 3]);

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        let catch =
            |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("{name} handler"));
        Ok(StopSignals([
            catch(SignalKind::interrupt(), "SIGINT")?,
            catch(SignalKind::terminate(), "SIGTERM")?,
            catch(SignalKind::hangup(), "SIGHUP")?,
        ]))
    }

    /// Resolves when one of them arrives.
    async fn recv(&mut self) {
        let [int, term, hup] = &mut self.0;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

async fn run(args: Args) -> anyhow::Result<End> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("locating remsim-demo")?
            .parent()
            .map(Path::to_path_buf)
            .context("the directory of remsim-demo")?,
    };
    let programs = Programs { dir: bin_dir };
    programs.check(&PROGRAMS)?;
    let p = args.base_port;
    procs::check_ports_free(&[(p, "gRPC API"), (p + 1, "RSPRO"), (p + 2, "bankd")])?;
    let dir = std::path::absolute(&args.dir).context("the demo folder")?;
    let say = Say {
        json: args.output == Output::Json,
    };
    let mut demo = Demo {
        args,
        say,
        programs,
        dir,
        cards: Vec::new(),
        procs: Vec::new(),
    };
    demo.prepare_dir()?;
    // Signal handlers before the first child, so that Ctrl-C at any moment
    // ends with everything stopped.
    let mut stop = StopSignals::install()?;
    let outcome = tokio::select! {
        outcome = demo.run() => Some(outcome),
        () = stop.recv() => None,
    };
    let outcome = outcome.unwrap_or_else(|| {
        demo.say.line("\nStopping every program the demo started.");
        Ok(End::Done)
    });
    demo.stop_all().await;
    outcome
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(End::Done) => ExitCode::SUCCESS,
        Ok(End::ReadFailed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("remsim-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
