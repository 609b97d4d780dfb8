//! Network partitions dropped in the kernel, for the e2e tests and the
//! fault run: an nftables table whose output chain drops the packets its
//! rules match. The kernel drops them, so both TCP ends see a silent peer
//! (a user-space proxy would keep both sessions alive and prove nothing).
//! Needs root and `nft` (`scripts/test.sh` installs nftables).

use std::process::Command;

/// Why nftables refused.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not run.
    #[error("cannot run nft (install nftables; partitions need root): {0}")]
    Run(#[from] std::io::Error),
    /// `nft` refused the command.
    #[error("nft {args}: {stderr}")]
    Refused {
        /// The command's arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
}

fn nft(args: &[&str]) -> Result<(), NftError> {
    let output = Command::new("nft").args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// An nftables set literal of `ports`: `{ 1, 2 }`.
pub fn port_set(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", ports.join(", "))
}

/// A partition in force: table `table`, whose output chain drops what its
/// rules match. Healed by [`Cut::heal`], or when dropped (so a failing test
/// heals too).
#[derive(Debug)]
pub struct Cut {
    table: String,
}

impl Cut {
    /// Adds table `table` with an output chain holding `rules` (each the
    /// words after `add rule ip <table> out`); on any failure the table
    /// goes again.
    pub fn add(table: &str, rules: &[Vec<&str>]) -> Result<Self, NftError> {
        nft(&["add", "table", "ip", table])?;
        let cut = Self {
            table: table.to_owned(),
        };
        nft(&[
            "add",
            "chain",
            "ip",
            table,
            "out",
            "{ type filter hook output priority 0 ; }",
        ])?;
        for rule in rules {
            let mut args = vec!["add", "rule", "ip", table, "out"];
            args.extend(rule.iter().copied());
            nft(&args)?;
        }
        Ok(cut)
    }

    /// The table's name, for [`heal`] from elsewhere.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Removes the partition.
    pub fn heal(self) -> Result<(), NftError> {
        let table = std::mem::take(&mut std::mem::ManuallyDrop::new(self).table);
        heal(&table)
    }

    /// Keeps the partition after this value goes; [`heal`] removes it.
    pub fn keep(self) -> String {
        std::mem::take(&mut std::mem::ManuallyDrop::new(self).table)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = heal(&self.table);
    }
}

/// Removes the nftables table `table`.
pub fn heal(table: &str) -> Result<(), NftError> {
    nft(&["delete", "table", "ip", table])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_are_nft_literals() {
        assert_eq!(port_set(&[5432]), "{ 5432 }");
        assert_eq!(port_set(&[1, 2]), "{ 1, 2 }");
    }
}
