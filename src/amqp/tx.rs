//! AMQP classes `confirm` and `tx`: publisher confirms mode, and
//! transactions (publishes and acks deferred to tx.commit, whose commit-ok
//! waits for the group commit when it stored anything).

use super::dispatch::{err, not_on_channel};
use super::Core;
use crate::broker::ConnId;
use crate::codec::*;

impl Core {
    /// confirm.select and tx.* on an open channel.
    pub(super) fn tx_method(&mut self, id: ConnId, ch: u16, m: Method) -> Result<(), Error> {
        match m {
            Method::ConfirmSelect(s) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                if c.tx.is_some() {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !s.nowait {
                    self.reply(id, ch, ConfirmSelectOk {}.into());
                }
                Ok(())
            }
            Method::TxSelect(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                if c.confirm {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(Vec::new());
                }
                self.reply(id, ch, TxSelectOk {}.into());
                Ok(())
            }
            Method::TxCommit(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                let Some(ops) = c.tx.replace(Vec::new()) else {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                // commit-ok says the persistent publishes are on disk: it
                // depends on this turn's commit if the transaction stored any.
                let earlier = std::mem::take(&mut self.engine.force_sync);
                let res = self.tx_commit(id, ch, ops);
                let stored = self.engine.force_sync;
                self.engine.force_sync |= earlier;
                res?;
                if stored {
                    self.depend_on_commit(id);
                }
                self.reply(id, ch, TxCommitOk {}.into());
                Ok(())
            }
            Method::TxRollback(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                let Some(ops) = c.tx.replace(Vec::new()) else {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                self.tx_rollback(ops, id, ch);
                self.reply(id, ch, TxRollbackOk {}.into());
                Ok(())
            }
            m => Err(not_on_channel(&m)),
        }
    }
}
