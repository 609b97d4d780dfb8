//! A node's `server.properties`: the settings every broker of the mall
//! shares (`deploy/kafka/server.properties`) followed by what this node and
//! this cluster need. Java's `Properties` keeps the last of two equal keys,
//! so what is added here wins over the shared file.

use std::fmt::Write as _;
use std::path::Path;

use super::Security;
use super::tls::TlsFiles;

/// The ports one node listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// `node.id`, from 1.
    pub id: u32,
    /// The PLAINTEXT listener: clients and the other brokers.
    pub broker: u16,
    /// The CONTROLLER listener: the KRaft quorum.
    pub controller: u16,
    /// The SASL_SSL listener (SCRAM-SHA-512 and PLAIN), when secured.
    pub sasl_ssl: Option<u16>,
    /// The SSL listener (client certificates required), when secured.
    pub ssl: Option<u16>,
}

/// Replication of the internal topics and the default of new topics: every
/// node up to three, and two in sync wherever there are three.
pub fn replication(nodes: usize) -> (usize, usize) {
    let factor = nodes.clamp(1, 3);
    let min_insync = if factor >= 3 { 2 } else { 1 };
    (factor, min_insync)
}

/// The whole properties file of node `me` of `cluster`.
pub fn render(
    shared: &str,
    cluster: &[NodePorts],
    me: &NodePorts,
    log_dir: &Path,
    security: Option<(&Security, &TlsFiles)>,
    extra: &[(String, String)],
) -> String {
    let mut out = String::from(shared);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let voters: Vec<String> = cluster
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller))
        .collect();
    let mut listeners = vec![
        format!("PLAINTEXT://127.0.0.1:{}", me.broker),
        format!("CONTROLLER://127.0.0.1:{}", me.controller),
    ];
    let mut advertised = vec![format!("PLAINTEXT://127.0.0.1:{}", me.broker)];
    let mut protocols = vec!["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"];
    for (name, port) in [("SASL_SSL", me.sasl_ssl), ("SSL", me.ssl)] {
        if let Some(port) = port {
            listeners.push(format!("{name}://127.0.0.1:{port}"));
            advertised.push(format!("{name}://127.0.0.1:{port}"));
        }
    }
    if me.sasl_ssl.is_some() {
        protocols.push("SASL_SSL:SASL_SSL");
    }
    if me.ssl.is_some() {
        protocols.push("SSL:SSL");
    }
    let (factor, min_insync) = replication(cluster.len());
    let _ = write!(
        out,
        "\n# This node, added by the testkit.\n\
         node.id={id}\n\
         controller.quorum.voters={voters}\n\
         listeners={listeners}\n\
         advertised.listeners={advertised}\n\
         listener.security.protocol.map={protocols}\n\
         log.dirs={log_dir}\n\
         default.replication.factor={factor}\n\
         min.insync.replicas={min_insync}\n\
         offsets.topic.replication.factor={factor}\n\
         transaction.state.log.replication.factor={factor}\n\
         transaction.state.log.min.isr={min_insync}\n\
         share.coordinator.state.topic.replication.factor={factor}\n\
         share.coordinator.state.topic.min.isr={min_insync}\n",
        id = me.id,
        voters = voters.join(","),
        listeners = listeners.join(","),
        advertised = advertised.join(","),
        protocols = protocols.join(","),
        log_dir = log_dir.display(),
    );
    if let Some((security, tls)) = security {
        let plain_users: String = security
            .users
            .iter()
            .map(|(user, password)| format!(" user_{user}=\"{password}\""))
            .collect();
        let _ = write!(
            out,
            "ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             listener.name.ssl.ssl.client.auth=required\n\
             ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=\
             org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};\n",
            keystore = tls.broker_keystore.display(),
            ca = tls.ca.display(),
        );
        if security.authorizer {
            // Nothing without an ACL, except the nodes themselves and the
            // set-up tools, which speak PLAINTEXT as ANONYMOUS.
            out.push_str(
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 super.users=User:ANONYMOUS\n\
                 allow.everyone.if.no.acl.found=false\n",
            );
        }
    }
    for (key, value) in extra {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32) -> NodePorts {
        NodePorts {
            id,
            broker: 9000 + id as u16,
            controller: 9100 + id as u16,
            sasl_ssl: None,
            ssl: None,
        }
    }

    fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .rev()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
    }

    #[test]
    fn replication_follows_the_cluster_size() {
        assert_eq!(replication(1), (1, 1));
        assert_eq!(replication(2), (2, 1));
        assert_eq!(replication(3), (3, 2));
        assert_eq!(replication(5), (3, 2));
    }

    #[test]
    fn a_node_of_three_knows_every_voter_and_only_its_own_ports() {
        let cluster = [node(1), node(2), node(3)];
        let text = render(
            "num.io.threads=4",
            &cluster,
            &cluster[1],
            Path::new("/d/2"),
            None,
            &[],
        );
        assert_eq!(value(&text, "node.id"), Some("2"));
        assert_eq!(
            value(&text, "controller.quorum.voters"),
            Some("1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103")
        );
        assert_eq!(
            value(&text, "listeners"),
            Some("PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102")
        );
        assert_eq!(
            value(&text, "advertised.listeners"),
            Some("PLAINTEXT://127.0.0.1:9002")
        );
        assert_eq!(value(&text, "min.insync.replicas"), Some("2"));
        assert_eq!(value(&text, "offsets.topic.replication.factor"), Some("3"));
        assert_eq!(value(&text, "log.dirs"), Some("/d/2"));
        assert_eq!(value(&text, "num.io.threads"), Some("4"));
        assert_eq!(value(&text, "sasl.enabled.mechanisms"), None);
    }

    #[test]
    fn later_settings_win_and_security_adds_listeners_users_and_the_authorizer() {
        let mut me = node(1);
        me.sasl_ssl = Some(9201);
        me.ssl = Some(9301);
        let security = Security {
            users: vec![("mall".into(), "s3cret".into())],
            client_certs: vec!["mall".into()],
            authorizer: true,
        };
        let tls = TlsFiles::at(Path::new("/tls"));
        let text = render(
            "min.insync.replicas=7\n",
            &[me],
            &me,
            Path::new("/d"),
            Some((&security, &tls)),
            &[("replica.lag.time.max.ms".into(), "5000".into())],
        );
        assert_eq!(value(&text, "min.insync.replicas"), Some("1"));
        assert_eq!(value(&text, "replica.lag.time.max.ms"), Some("5000"));
        assert!(
            value(&text, "listeners")
                .is_some_and(|l| l.ends_with(",SASL_SSL://127.0.0.1:9201,SSL://127.0.0.1:9301"))
        );
        assert_eq!(
            value(&text, "listener.security.protocol.map"),
            Some("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL")
        );
        assert!(
            value(&text, "listener.name.sasl_ssl.plain.sasl.jaas.config")
                .is_some_and(|c| c.contains("user_mall=\"s3cret\""))
        );
        assert_eq!(
            value(&text, "ssl.keystore.location"),
            Some("/tls/broker.pem")
        );
        assert_eq!(
            value(&text, "listener.name.ssl.ssl.client.auth"),
            Some("required")
        );
        assert_eq!(value(&text, "super.users"), Some("User:ANONYMOUS"));
    }
}
