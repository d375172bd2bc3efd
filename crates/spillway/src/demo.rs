//! `spillway demo`: a throwaway PostgreSQL with reference 002's `bank.holding` and
//! reference 003's `commerce.users` / `commerce.products`, captured live.

use spillway_server::config::Config;
use spillway_testkit::{PgCluster, PgOptions};
use std::io::{IsTerminal, Write};
use std::time::Duration;

const SCHEMA: &str = "
CREATE SCHEMA bank;
CREATE TABLE bank.holding (
  holding_id int,
  user_id int,
  holding_stock varchar(8),
  holding_quantity int,
  datetime_created timestamp,
  datetime_updated timestamp
);
ALTER TABLE bank.holding REPLICA IDENTITY FULL;
CREATE SCHEMA commerce;
CREATE TABLE commerce.users (
  id serial PRIMARY KEY,
  username text NOT NULL,
  email text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE commerce.products (
  id serial PRIMARY KEY,
  name text NOT NULL,
  description text,
  price numeric(10,2) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE commerce.users REPLICA IDENTITY FULL;
ALTER TABLE commerce.products REPLICA IDENTITY FULL;
";

/// Reference 002's script, then a few commerce changes. Each entry is one transaction;
/// the number is how many change events it produces.
const SCRIPT: &[(&str, u64)] = &[
    ("INSERT INTO bank.holding VALUES (1000, 1, 'VFIAX', 10, now(), now())", 1),
    ("insert into bank.holding values (1001, 2, 'SP500', 1, now(), now())", 1),
    ("insert into bank.holding values (1002, 3, 'SP500', 1, now(), now())", 1),
    ("update bank.holding set holding_quantity = 100 where holding_id = 1000", 1),
    ("delete from bank.holding where user_id = 3", 1),
    ("delete from bank.holding where user_id = 2", 1),
    ("insert into bank.holding values (1003, 3, 'VTSAX', 100, now(), now())", 1),
    ("update bank.holding set holding_quantity = 10 where holding_id=1003", 1),
    ("INSERT INTO commerce.users (username, email) VALUES ('ada', 'ada@example.com'), ('linus', 'linus@example.com')", 2),
    ("INSERT INTO commerce.products (name, description, price) VALUES ('kettle', 'stainless, 1.7 l', 39.90)", 1),
    ("UPDATE commerce.products SET price = 34.50 WHERE name = 'kettle'", 1),
    ("DELETE FROM commerce.users WHERE username = 'linus'", 1),
];

pub(crate) async fn demo(once: bool) -> Result<(), String> {
    let mut signals = crate::ShutdownSignal::install()?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    say(
        colour,
        "starting a throwaway PostgreSQL (wal_level=logical) …",
    );
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(PgOptions::default()))
        .await
        .map_err(|e| e.to_string())??;
    cluster
        .create_database("shop")
        .await
        .map_err(|e| e.to_string())?;
    cluster
        .execute("shop", SCHEMA)
        .await
        .map_err(|e| e.to_string())?;
    let data_dir = cluster.dir().join("spillway-data");
    say(
        colour,
        &format!(
            "temporary files in {} (removed on exit)",
            cluster.dir().display()
        ),
    );
    let listen = if std::net::TcpListener::bind("127.0.0.1:7654").is_ok() {
        "127.0.0.1:7654".to_string()
    } else {
        "127.0.0.1:0".to_string()
    };
    let toml = format!(
        "[source]\ndsn = \"{}\"\nslot = \"spillway\"\npublication = \"spillway\"\ntables = [\"bank.holding\", \"commerce.*\"]\n\n[log]\ndir = \"{}\"\n\n[api]\nlisten = \"{listen}\"\n",
        cluster.dsn("shop"),
        data_dir.display()
    );
    let config =
        Config::from_parts(Some(("demo config", &toml)), &[]).map_err(|e| e.to_string())?;
    let running = spillway_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    say(
        colour,
        &format!(
            "spillway is capturing database `shop` on port {}; api on http://{}",
            cluster.port, running.addr
        ),
    );

    let log = running.log.clone();
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0u64);
    let printer = tokio::spawn(print_log(log, colour, count_tx));

    say(
        colour,
        "running reference 002's script and a few commerce changes …",
    );
    let mut expected = 0;
    for (sql, n) in SCRIPT {
        say(colour, &format!("sql> {sql}"));
        cluster
            .execute("shop", sql)
            .await
            .map_err(|e| e.to_string())?;
        expected += n;
        // Wait for the events to appear before the next statement, so the output reads
        // as a conversation. This waits on a condition, not a fixed time.
        let wait = count_rx.wait_for(|c| *c >= expected);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .map_err(|_| format!("no change event arrived within 30s for `{sql}`"))?
            .map_err(|_| "the printer stopped".to_string())?;
        if !once {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    if once {
        say(colour, &format!("done: {expected} change events captured"));
    } else {
        say(
            colour,
            &format!(
                "make your own changes and watch them appear:\n    psql \"{}\"\n  or follow the stream from another terminal:\n    curl -N 'http://{}/v1/changes?from=beginning'\n  press Ctrl-C to stop and remove everything.",
                cluster.dsn("shop").replace("?sslmode=disable", ""),
                running.addr
            ),
        );
        signals.wait().await;
    }
    running.shutdown();
    let result = running.wait().await.map_err(|e| e.to_string());
    printer.abort();
    drop(cluster);
    result
}

fn say(colour: bool, msg: &str) {
    if colour {
        println!("\x1b[1m▶ {msg}\x1b[0m");
    } else {
        println!("▶ {msg}");
    }
    let _ = std::io::stdout().flush();
}

async fn print_log(
    log: spillway_log::ChangeLog,
    colour: bool,
    count: tokio::sync::watch::Sender<u64>,
) {
    let mut committed = log.subscribe();
    let Ok(mut reader) = log.reader(1) else {
        return;
    };
    let mut changes = 0u64;
    loop {
        committed.borrow_and_update();
        let Ok((r, batch)) = tokio::task::spawn_blocking(move || {
            let b = reader.read_batch(1024, 1 << 20);
            (reader, b)
        })
        .await
        else {
            return;
        };
        reader = r;
        match batch {
            Ok(records) if records.is_empty() => {
                if committed.changed().await.is_err() {
                    return;
                }
            }
            Ok(records) => {
                for rec in records {
                    let line = String::from_utf8_lossy(&rec.payload);
                    if line.starts_with("{\"type\":\"change\"") {
                        changes += 1;
                    }
                    println!("{}", crate::render::pretty(&line, colour));
                }
                let _ = std::io::stdout().flush();
                let _ = count.send(changes);
            }
            Err(e) => {
                eprintln!("error: reading the change log: {e}");
                return;
            }
        }
    }
}
