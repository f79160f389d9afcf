//! Several hosts (`host=a,b`, `postgres://a,b/db`): one driver configuration per host, so
//! that each is tried under its own `connect_timeout`.
//!
//! The driver tries the hosts of one configuration in turn, but its own connect timeout
//! covers only each TCP connect: a host that accepts and then never answers (a hung
//! server, a deaf proxy, a half-open failover) keeps the attempt there until the pool's
//! deadline, and the next host is never tried. Split, each host gets the whole budget,
//! as in libpq.

use tokio_postgres::Config;
use tokio_postgres::config::{Host, LoadBalanceHosts};

/// The configuration of each host, in the order to try them (shuffled with
/// `load_balance_hosts=random`); `pg` itself when it names at most one host.
pub(super) fn one_per_host(pg: Config) -> Vec<Config> {
    let hosts = pg.get_hosts();
    if hosts.len() <= 1 {
        return vec![pg];
    }
    let ports = pg.get_ports();
    let addrs = pg.get_hostaddrs();
    let mut out: Vec<Config> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut one = same_but_hosts(&pg);
            match host {
                Host::Tcp(name) => one.host(name),
                #[cfg(unix)]
                Host::Unix(path) => one.host_path(path),
            };
            // One port for all hosts, or one each (the driver checks the counts).
            if let Some(port) = ports.get(i).or(ports.first()) {
                one.port(*port);
            }
            if let Some(addr) = addrs.get(i) {
                one.hostaddr(*addr);
            }
            one
        })
        .collect();
    if pg.get_load_balance_hosts() == LoadBalanceHosts::Random {
        let start = usize::try_from(crate::random::random_u64() % out.len() as u64).unwrap_or(0);
        out.rotate_left(start);
    }
    out
}

/// A copy of `pg` with every setting but its hosts, ports and host addresses.
fn same_but_hosts(pg: &Config) -> Config {
    let mut one = Config::new();
    if let Some(user) = pg.get_user() {
        one.user(user);
    }
    if let Some(password) = pg.get_password() {
        one.password(password);
    }
    if let Some(db) = pg.get_dbname() {
        one.dbname(db);
    }
    if let Some(options) = pg.get_options() {
        one.options(options);
    }
    if let Some(name) = pg.get_application_name() {
        one.application_name(name);
    }
    one.ssl_mode(pg.get_ssl_mode());
    one.ssl_negotiation(pg.get_ssl_negotiation());
    if let Some(t) = pg.get_connect_timeout() {
        one.connect_timeout(*t);
    }
    if let Some(t) = pg.get_tcp_user_timeout() {
        one.tcp_user_timeout(*t);
    }
    one.keepalives(pg.get_keepalives());
    one.keepalives_idle(pg.get_keepalives_idle());
    if let Some(t) = pg.get_keepalives_interval() {
        one.keepalives_interval(t);
    }
    if let Some(n) = pg.get_keepalives_retries() {
        one.keepalives_retries(n);
    }
    one.target_session_attrs(pg.get_target_session_attrs());
    one.channel_binding(pg.get_channel_binding());
    one
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_host_keeps_every_other_setting() {
        let pg: Config = "host=a,b port=5433,5434 user=u password=p dbname=d application_name=x \
                          connect_timeout=3 target_session_attrs=read-write sslmode=disable \
                          keepalives_idle=7 options='-c statement_timeout=5s'"
            .parse()
            .unwrap();
        let each = one_per_host(pg.clone());
        assert_eq!(each.len(), 2);
        for (one, (host, port)) in each.iter().zip([("a", 5433), ("b", 5434)]) {
            assert_eq!(one.get_hosts(), &[Host::Tcp(host.to_owned())]);
            assert_eq!(one.get_ports(), &[port]);
            assert_eq!(one.get_user(), Some("u"));
            assert_eq!(one.get_password(), Some(&b"p"[..]));
            assert_eq!(one.get_dbname(), Some("d"));
            assert_eq!(one.get_application_name(), Some("x"));
            assert_eq!(one.get_options(), Some("-c statement_timeout=5s"));
            assert_eq!(one.get_connect_timeout(), Some(&Duration::from_secs(3)));
            assert_eq!(one.get_keepalives_idle(), Duration::from_secs(7));
            assert_eq!(
                one.get_target_session_attrs(),
                pg.get_target_session_attrs()
            );
            assert_eq!(one.get_ssl_mode(), pg.get_ssl_mode());
        }
        // One port for all hosts applies to each.
        let pg: Config = "host=a,b port=6000".parse().unwrap();
        assert!(one_per_host(pg).iter().all(|c| c.get_ports() == [6000]));
        // A single host is left as it is.
        let pg: Config = "host=a".parse().unwrap();
        assert_eq!(one_per_host(pg).len(), 1);
    }
}
