//! The probe module of the sandbox tests: one step per behaviour, allowed and hostile. Each
//! hostile step *tries* its attack and returns the host's answer as its error, so the tests
//! can assert both the message and that nothing changed.

use std::time::Duration;

use canup_sdk::{Context, Error, Result, bail, database, exec::Command, fs, http, ui};

canup_sdk::export_step! {
    "allowed-exec" => allowed_exec,
    "allowed-fs" => allowed_fs,
    "allowed-http" => allowed_http,
    "allowed-ui" => allowed_ui,
    "allowed-context" => allowed_context,
    "traversal" => traversal,
    "traversal-inside" => traversal_inside,
    "symlink-read" => symlink_read,
    "symlink-write" => symlink_write,
    "write-readonly" => write_readonly,
    "undeclared-program" => undeclared_program,
    "undeclared-args" => undeclared_args,
    "relative-program" => relative_program,
    "path-lookup" => path_lookup,
    "host-env" => host_env,
    "ld-preload" => ld_preload,
    "bash-func" => bash_func,
    "rpm-eval" => rpm_eval,
    "read-fifo" => read_fifo,
    "read-hardlink" => read_hardlink,
    "ui-flood" => ui_flood,
    "readonly-claim" => readonly_claim,
    "terminal-spoof" => terminal_spoof,
    "http-encoded-slash" => http_encoded_slash,
    "infinite-loop" => infinite_loop,
    "memory-bomb" => memory_bomb,
    "stdout-flood" => stdout_flood,
    "exec-flood" => exec_flood,
    "undeclared-endpoint" => undeclared_endpoint,
    "redirect-elsewhere" => redirect_elsewhere,
    "big-body" => big_body,
    "auth-header" => auth_header,
    "wasi-fs" => wasi_fs,
    "wasi-socket" => wasi_socket,
    "exec-timeout" => exec_timeout,
    "exec-slow" => exec_slow,
    "wall-time" => wall_time,
    "panic" => panic,
    "sleepy" => sleepy,
    "empty" => empty,
    "exec-true-100" => exec_true_100,
    "read-4k-1000" => read_4k_1000,
    "race" => race,
    "rewrite" => rewrite,
    "read-forever" => read_forever,
    "long-args" => long_args,
    "new-drop-in" => new_drop_in,
    "create-dir" => create_dir,
    "create-dir-outside" => create_dir_outside,
    "choose" => choose,
    "database-password" => database_password,
    "dry-run-flood" => dry_run_flood,
    "huge-arg" => huge_arg,
    "huge-error" => huge_error,
    "choose-flood" => choose_flood,
    "stdin-script" => stdin_script,
    "stdin-data" => stdin_data,
    "cwd-tmp" => cwd_tmp,
    "unit-root" => unit_root,
    "unit-identity" => unit_identity,
    "unit-allowed" => unit_allowed,
    "planted-rpm" => planted_rpm,
    "python-env" => python_env,
    "compose-root" => compose_root,
}

fn allowed_exec(_: &Context) -> Result<()> {
    let out = Command::new("/usr/bin/env").env("FOO", "bar").env("CPS_API_URL", "http://localhost:8082").run()?;
    print!("{}", out.stdout_text());
    let rpm = Command::new("/usr/bin/rpm").args(["-q", "canopsis-core"]).run()?;
    print!("{}", rpm.stdout_text());
    let id = Command::new("/usr/bin/su").args(["-", "canopsis", "-c", "canopsinit --canopsis-edition core"]).run()?;
    print!("{}", id.stdout_text());
    let missing = Command::new("/usr/bin/rpm").args(["-q", "canopsis-cat"]).output()?;
    println!("rpm canopsis-cat status {:?}", missing.status());
    Ok(())
}

fn allowed_fs(_: &Context) -> Result<()> {
    let version = fs::read_to_string("/opt/canopsis/VERSION.txt")?;
    println!("version={}", version.trim());
    fs::write("/opt/canopsis/etc/new.conf", "created=1\n")?;
    fs::append("/opt/canopsis/etc/webserver.conf", "canopsis.webcore.services.metaalarmrule=1\n")?;
    println!("exists={} missing={}", fs::exists("/opt/canopsis/etc/new.conf")?, fs::exists("/opt/canopsis/etc/nope.conf")?);
    println!("list={}", fs::list_dir("/opt/canopsis/etc")?.join(","));
    let meta = fs::metadata("/opt/canopsis/etc/webserver.conf")?;
    println!("size={} kind={:?}", meta.size, meta.kind);
    fs::remove("/opt/canopsis/etc/old.conf")?;
    Ok(())
}

fn allowed_http(_: &Context) -> Result<()> {
    let resp = http::Request::post("api", "/api/v4/broadcast-message").json(r##"{"message":"Canopsis upgrade in progress","color":"#e75e40"}"##).send()?;
    println!("post status={} body={}", resp.status(), resp.text());
    let moved = http::Request::get("api", "/old-path").send()?;
    println!("redirected status={} body={}", moved.status(), moved.text());
    Ok(())
}

fn allowed_ui(_: &Context) -> Result<()> {
    ui::info("hello operator");
    ui::warn("careful");
    ui::progress(5, Some(10), "halfway");
    let yes = ui::confirm("Proceed?");
    let done = ui::manual("Upgrade Redis to version 5 by hand.");
    println!("confirm={yes} manual={done}");
    Ok(())
}

fn allowed_context(ctx: &Context) -> Result<()> {
    println!(
        "installed={} target={} release={} edition={} method={} dry_run={} step={}",
        ctx.installed, ctx.target, ctx.release, ctx.edition, ctx.method, ctx.dry_run, ctx.step_id
    );
    Ok(())
}

fn traversal(_: &Context) -> Result<()> {
    let data = fs::read("/opt/canopsis/etc/../../../../../../../../etc/passwd")?;
    bail!("read {} bytes of the host's /etc/passwd", data.len())
}

fn traversal_inside(_: &Context) -> Result<()> {
    let data = fs::read("/opt/canopsis/etc/../../../root/secret")?;
    bail!("read {} bytes of /root/secret", data.len())
}

fn symlink_read(_: &Context) -> Result<()> {
    let data = fs::read("/opt/canopsis/etc/escape/secret")?;
    bail!("read {} bytes through the symlink", data.len())
}

fn symlink_write(_: &Context) -> Result<()> {
    fs::write("/opt/canopsis/etc/escape/secret", "pwned\n")?;
    bail!("wrote through the symlink")
}

fn write_readonly(_: &Context) -> Result<()> {
    fs::write("/opt/canopsis/VERSION.txt", "Canopsis version 9.9.9\n")?;
    bail!("rewrote VERSION.txt")
}

fn undeclared_program(_: &Context) -> Result<()> {
    Command::new("/bin/sh").args(["-c", "touch /pwned"]).run()?;
    bail!("ran a shell")
}

fn undeclared_args(_: &Context) -> Result<()> {
    Command::new("/usr/bin/systemctl").args(["stop", "canopsis-engine-go@engine-che"]).run()?;
    bail!("stopped an engine")
}

fn relative_program(_: &Context) -> Result<()> {
    Command::new("usr/bin/systemctl").arg("daemon-reload").run()?;
    bail!("ran a relative program")
}

fn path_lookup(_: &Context) -> Result<()> {
    Command::new("systemctl").arg("daemon-reload").run()?;
    bail!("ran a program found through PATH")
}

fn host_env(_: &Context) -> Result<()> {
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    if !vars.is_empty() || !args.is_empty() || std::env::var("HOME").is_ok() {
        bail!("saw the host's environment: vars {vars:?} args {args:?}");
    }
    println!("environment empty, no arguments");
    Ok(())
}

fn ld_preload(_: &Context) -> Result<()> {
    Command::new("/usr/bin/systemctl").arg("daemon-reload").env("LD_PRELOAD", "/tmp/evil.so").run()?;
    bail!("passed LD_PRELOAD")
}

/// A FIFO under an allowed path: opening it for reading would wait for a writer forever.
fn read_fifo(_: &Context) -> Result<()> {
    let data = fs::read("/opt/canopsis/etc/fifo")?;
    bail!("read {} bytes from a FIFO", data.len())
}

/// A hard link under an allowed path to a file outside every glob.
fn read_hardlink(_: &Context) -> Result<()> {
    let data = fs::read("/opt/canopsis/etc/linked-secret")?;
    bail!("read {:?} through a hard link", String::from_utf8_lossy(&data))
}

/// More text than a terminal or a log should take from one step.
fn ui_flood(_: &Context) -> Result<()> {
    let big = "x".repeat(100_000);
    for _ in 0..20 {
        ui::info(&big);
    }
    ui::progress(1, None, &big);
    Ok(())
}

fn rpm_eval(_: &Context) -> Result<()> {
    Command::new("/usr/bin/rpm").args(["-q", "--eval=%(id > /pwned)"]).run()?;
    bail!("rpm ran with --eval")
}

/// Declared read-only by the step (see the test); the policy says nothing of the kind.
fn readonly_claim(ctx: &Context) -> Result<()> {
    let out = Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
    if ctx.dry_run && !out.simulated() {
        bail!("a changing command ran for real in a dry run");
    }
    Ok(())
}

fn bash_func(_: &Context) -> Result<()> {
    // bash imports `BASH_FUNC_name%%` as a function named `name`, run instead of the program.
    Command::new("/usr/bin/systemctl").arg("daemon-reload").env("BASH_FUNC_systemctl%%", "() { id > /pwned; }").run()?;
    bail!("passed BASH_FUNC_systemctl%%")
}

/// Escape sequences that would erase the line, move the cursor, clear the screen and paint a
/// fake outcome, through every way a step's text reaches the operator.
fn terminal_spoof(_: &Context) -> Result<()> {
    ui::info("before\x1b[2K\r      ok (1 ms)");
    ui::progress(1, Some(2), "\x1b[1Ahalf");
    println!("\x1b[1A\x1b[2Kout");
    let _ = ui::confirm("\x1b[2J\x1b[HApply this plan? [y/N]");
    let _ = ui::manual("\u{9b}2Jdone");
    bail!("\x1b[31mfailed\x1b[0m")
}

fn http_encoded_slash(_: &Context) -> Result<()> {
    // `/api/v4/**` is declared; the server would read `/secret`.
    http::Request::get("api", "/api/v4/x%2F..%2F..%2Fsecret").send()?;
    bail!("sent a path with an encoded separator")
}

fn infinite_loop(_: &Context) -> Result<()> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn memory_bomb(_: &Context) -> Result<()> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn stdout_flood(_: &Context) -> Result<()> {
    for i in 0..200_000 {
        println!("flood line {i:06} ..............................................");
    }
    eprintln!("flood finished");
    Ok(())
}

fn exec_flood(_: &Context) -> Result<()> {
    let out = Command::new("/usr/bin/flood").run()?;
    println!("kept={} truncated={}", out.stdout().len(), out.truncated());
    Ok(())
}

fn undeclared_endpoint(_: &Context) -> Result<()> {
    http::Request::get("internal-admin", "/").send()?;
    bail!("reached an undeclared endpoint")
}

fn redirect_elsewhere(_: &Context) -> Result<()> {
    let r = http::Request::get("api", "/redirect-elsewhere").send()?;
    bail!("followed a redirect to another host: {}", r.status())
}

fn big_body(_: &Context) -> Result<()> {
    let r = http::Request::get("api", "/big").send()?;
    bail!("received {} bytes", r.body().len())
}

fn auth_header(_: &Context) -> Result<()> {
    http::Request::get("api", "/api/v4/app-info").header("Authorization", "Basic c3RlcDpzdGVw").send()?;
    bail!("set its own Authorization header")
}

fn wasi_fs(_: &Context) -> Result<()> {
    let errors = [
        std::fs::read_to_string("/etc/passwd").err(),
        std::fs::write("/tmp/canup-wasi-pwned", "pwned").err(),
        std::fs::read_dir("/").err(),
        std::fs::read_to_string("opt/canopsis/VERSION.txt").err(),
    ];
    if errors.iter().any(Option::is_none) {
        bail!("direct WASI filesystem access worked: {errors:?}");
    }
    println!("all direct filesystem calls failed: {errors:?}");
    Ok(())
}

fn wasi_socket(_: &Context) -> Result<()> {
    let addr = fs::read_to_string("/opt/canopsis/etc/listener")?;
    match std::net::TcpStream::connect(addr.trim()) {
        Ok(_) => bail!("opened a socket to {}", addr.trim()),
        Err(e) => {
            println!("socket refused: {e}");
            Ok(())
        }
    }
}

fn exec_timeout(_: &Context) -> Result<()> {
    let err = Command::new("/usr/bin/hang").timeout(Duration::from_millis(500)).run().map(|_| ());
    err?;
    bail!("hang returned")
}

/// A command that takes 2 s and says where it is, with no timeout of the step's own: its limit
/// is what its declaration and the policy give it.
fn exec_slow(_: &Context) -> Result<()> {
    Command::new("/usr/bin/slow").run()?;
    Ok(())
}

fn wall_time(_: &Context) -> Result<()> {
    Command::new("/usr/bin/hang").timeout(Duration::from_secs(120)).run()?;
    Err(Error::msg("hang returned"))
}

fn panic(_: &Context) -> Result<()> {
    panic!("boom: the probe panicked on purpose");
}

fn sleepy(_: &Context) -> Result<()> {
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
    }
    println!("slept 1.2 s");
    Ok(())
}

/// For the benchmark: the cost of a step that does nothing.
fn empty(_: &Context) -> Result<()> {
    Ok(())
}

/// For the benchmark: 100 host `exec` calls of `/bin/true`.
fn exec_true_100(_: &Context) -> Result<()> {
    for _ in 0..100 {
        Command::new("/bin/true").run()?;
    }
    Ok(())
}

/// For the benchmark: 1000 reads of a 4 KB file through the `fs` capability.
fn read_4k_1000(_: &Context) -> Result<()> {
    for _ in 0..1000 {
        let data = fs::read("/opt/canopsis/etc/bench-4k")?;
        std::hint::black_box(data);
    }
    Ok(())
}

/// Reads and writes one allowed file 10,000 times while the test swaps its directory with a
/// symlink to an outside one; prints what the reads saw (the test asserts no outside content).
fn race(_: &Context) -> Result<()> {
    let (mut inside, mut outside, mut read_errors, mut written, mut write_errors) = (0, 0, 0, 0, 0);
    for i in 0..5000 {
        match fs::read("/opt/canopsis/etc/race/race.conf") {
            Ok(data) if data.starts_with(b"OUTSIDE") => outside += 1,
            Ok(_) => inside += 1,
            Err(_) => read_errors += 1,
        }
        match fs::write("/opt/canopsis/etc/race/race.conf", format!("inside {i}\n")) {
            Ok(()) => written += 1,
            Err(_) => write_errors += 1,
        }
    }
    println!("inside={inside} outside={outside} read-errors={read_errors} written={written} write-errors={write_errors}");
    Ok(())
}

/// An ordinary edit, repeated: the test planted symlinks where temporary files used to go.
fn rewrite(_: &Context) -> Result<()> {
    for i in 0..20 {
        fs::write("/opt/canopsis/etc/old.conf", format!("old={i}\n"))?;
    }
    Ok(())
}

/// Host calls that each take the host a while (reading a big file), forever: only the CPU
/// budget, charged with the host's time, stops it early.
fn read_forever(_: &Context) -> Result<()> {
    loop {
        std::hint::black_box(fs::read("/opt/canopsis/etc/huge")?);
    }
}

/// A refused command with 200 arguments of 100 KB: its audit record must stay small.
fn long_args(_: &Context) -> Result<()> {
    let big = "canopsis-".repeat(11_000);
    Command::new("/usr/bin/rpm").arg("-q").args(vec![big; 200]).run()?;
    bail!("ran rpm with 20 MB of arguments")
}

/// A new systemd drop-in: a command that systemd would run as root.
fn new_drop_in(_: &Context) -> Result<()> {
    fs::write("/etc/systemd/system/canopsis-engine-go@.service.d/zz-canup.conf", "[Service]\nExecStartPre=/bin/sh -c 'id > /pwned'\n")?;
    bail!("created a drop-in")
}

/// Contract 1.1: `mkdir -p` of two new levels, then a file in the new directory.
fn create_dir(_: &Context) -> Result<()> {
    fs::create_dir("/opt/canopsis/etc/new.d/sub", Some(0o750))?;
    fs::create_dir("/opt/canopsis/etc/new.d/sub", None)?;
    fs::write("/opt/canopsis/etc/new.d/sub/x.conf", "x=1\n")?;
    println!("created");
    Ok(())
}

/// A directory outside the write rules.
fn create_dir_outside(_: &Context) -> Result<()> {
    let e = fs::create_dir("/opt/canopsis/share/new/sub", None).err().ok_or_else(|| Error::msg("created a directory outside the write rules"))?;
    Err(e)
}

/// Contract 1.1: an optional action, off unless answered.
fn choose(_: &Context) -> Result<()> {
    let i = ui::choose("enable-x", "Enable the optional X?", &["no", "yes"], 0)?;
    println!("chosen={i}");
    Ok(())
}

/// Every way a step might get the database password canup connects with: the file that holds
/// it, a program run with that file as its environment, psql's backslash commands (a shell,
/// the connection file), and the server's own view of the session. Prints what each gave.
fn database_password(_: &Context) -> Result<()> {
    let show = |what: &str, got: Result<String>| match got {
        Ok(text) => println!("{what}: GOT {text}"),
        Err(e) => println!("{what}: refused: {e}"),
    };
    show("read go-engines-vars.conf", fs::read_to_string("/opt/canopsis/etc/go-engines-vars.conf"));
    show("env with go-engines-vars.conf", Command::new("/usr/bin/env").output().map(|o| o.stdout_text()));
    for sql in ["\\! cat \"$PGPASSFILE\"", "\\! env", "SELECT 1;\n\\! env", "\\i /opt/canopsis/etc/go-engines-vars.conf"] {
        show(&format!("psql {sql:?}"), database::postgres(sql).output().map(|o| format!("status {:?} {} {}", o.status(), o.stdout_text(), o.stderr_text())));
    }
    show(
        "session",
        database::postgres("SELECT current_user || ' ' || current_database() || ' ' || coalesce(current_setting('application_name'), '')")
            .read_only()
            .run()
            .map(|o| o.stdout_text()),
    );
    Ok(())
}

/// A changing command of 100 KB listed again and again in a dry run: the listing is bounded.
fn dry_run_flood(_: &Context) -> Result<()> {
    let big = "y".repeat(100_000);
    for _ in 0..300 {
        Command::new("/usr/bin/true").arg(big.as_str()).run()?;
    }
    Ok(())
}

/// One argument of 20 MB: over what the host takes for one command.
fn huge_arg(_: &Context) -> Result<()> {
    Command::new("/usr/bin/true").arg("y".repeat(20 << 20)).run()?;
    bail!("ran a command with a 20 MB argument")
}

/// An error of 50 MB.
fn huge_error(_: &Context) -> Result<()> {
    bail!("{}", "e".repeat(50 << 20))
}

/// 64 options of 1 MB each.
fn choose_flood(_: &Context) -> Result<()> {
    let option = "o".repeat(1 << 20);
    let options: Vec<&str> = (0..64).map(|_| option.as_str()).collect();
    let i = ui::choose("flood", "Which one?", &options, 0)?;
    bail!("answered {i}")
}

/// A script of the step's own making on a program's standard input (`runProgram` for mongo).
fn stdin_script(_: &Context) -> Result<()> {
    Command::new("/usr/bin/env").stdin("runProgram('sh', '-c', 'id > /pwned')").run()?;
    bail!("a program got the step's own input")
}

/// The release's signed data file on standard input: allowed, listed and audited by name.
fn stdin_data(_: &Context) -> Result<()> {
    let script = canup_sdk::context::data("rename.js")?;
    Command::new("/usr/bin/env").stdin(script).run()?;
    Ok(())
}

/// A working directory anyone may write to (a package file planted there is what yum takes).
fn cwd_tmp(_: &Context) -> Result<()> {
    Command::new("/usr/bin/env").cwd("/tmp").run()?;
    bail!("ran a command in /tmp")
}

/// A drop-in line that systemd runs as root (`+`), in a drop-in the step may rewrite.
fn unit_root(_: &Context) -> Result<()> {
    fs::write("/etc/systemd/system/canopsis-engine-go@.service.d/che.conf", "[Service]\nExecStartPre=+/bin/sh -c 'id > /pwned'\n")?;
    bail!("wrote a root command into a drop-in")
}

/// The engine's unit without its `User=`: the service would run as root.
fn unit_identity(_: &Context) -> Result<()> {
    let path = "/etc/systemd/system/canopsis-engine-go@engine-che.service";
    let text = fs::read_to_string(path)?;
    let without: String = text.lines().filter(|l| !l.starts_with("User=")).map(|l| format!("{l}\n")).collect();
    fs::write(path, without)?;
    bail!("removed User= from a unit")
}

/// What 3.39.0 and 23.04.8 do: an ExecStart of a Canopsis program.
fn unit_allowed(_: &Context) -> Result<()> {
    fs::write(
        "/etc/systemd/system/canopsis-engine-go@.service.d/che.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/env /opt/canopsis/bin/engine-che -publishQueue Engine_event_filter\n",
    )?;
    Ok(())
}

/// A package file a local user left in /tmp, taken by yum as a local package.
fn planted_rpm(_: &Context) -> Result<()> {
    Command::new("/usr/bin/yum").args(["update", "-y", "canopsis-core-24.04.3.rpm"]).cwd("/tmp").run()?;
    bail!("yum installed a local file")
}

/// yum is Python: PYTHONWARNINGS imports a module by name, BROWSER names what it runs.
fn python_env(_: &Context) -> Result<()> {
    Command::new("/usr/bin/yum")
        .args(["update", "-y", "canopsis-core-24.04.3"])
        .env("PYTHONWARNINGS", "ignore::antigravity._DeprecatedClass")
        .env("BROWSER", "/bin/sh -c 'id > /pwned' #%s")
        .run()?;
    bail!("yum ran with the step's Python variables")
}

/// A privileged service with the host's `/` mounted, added to the Compose project.
fn compose_root(_: &Context) -> Result<()> {
    let path = "/opt/canopsis/docker/docker-compose.yml";
    let text = fs::read_to_string(path)?;
    fs::write(path, text.replacen("services:\n", "services:\n  rooted:\n    image: alpine:latest\n    privileged: true\n    volumes: [\"/:/host\"]\n", 1))?;
    bail!("added a privileged service")
}
