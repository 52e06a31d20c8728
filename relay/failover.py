"""Sessions that outlive their relay: publish them, take them over, end the forgotten ones.

- ``publish``: every live session of this relay, as the session directory keeps it
  (relay.directory.Entry), written when it changes; gone sessions are removed.
- ``adopt``: an agent's resume secret or a viewer's ``accept`` names a session this relay
  does not hold, but the directory does (its relay died, and HAProxy sent its support
  person here): claim it and rebuild it in relay.pairing as a session whose agent link was
  just lost, with the same id and billing clock and control released. The rules then
  resume it exactly as after a lost link.
- ``sweep``: sessions of a dead relay that nobody resumed within the grace window end
  (``relay-lost``) at that relay's last sign of life for them.
- ``hand_over``: this relay stops (SIGTERM: a restart or a rolling upgrade) with a shared
  store: its accepted sessions stay in the directory, as after a crash but current to the
  moment, for another relay (or this one, restarted) to resume; only the waiting ones end.
  At start-up a restarted relay releases what it left there (relay.pgstore's ``recover``)
  instead of ending it, so it too can take its own sessions back.
"""

from __future__ import annotations

import json
import logging

import protocol
from relay.directory import Entry, resume_hash
from relay.pairing import ACTIVE, Pairing, Session
from relay.recorder import QueuedRecorder
from relay.stores import Store

log = logging.getLogger("relay")

SWEEP_MARGIN_S = 15.0  # beyond the grace window: a slow relay's heartbeat is not a death


def entry_of(session: Session, relay: str, now: float) -> Entry:
    return Entry(
        session=session.id, technician=session.technician, state=session.state,
        accepted_at=session.accepted_at, resume_sha256=resume_hash(session.resume),
        relay=relay, heartbeat_at=now, control=session.technician if session.control else "",
        machine=session.machine, user=session.user, address=session.address,
        requested_at=session.requested_at,
        screens=json.dumps([[s.x, s.y, s.width, s.height] for s in session.screens]),
        # issue 12's session code, pause and receipt reference, where the rules have them
        code=getattr(session, "code", ""), paused_s=getattr(session, "paused_s", 0.0),
        paused_at=getattr(session, "paused_at", None), ref=getattr(session, "ref", 0),
        note=session.note)


class Failover:
    """This relay's side of the session directory."""

    def __init__(self, store: Store, pairing: Pairing, writer: QueuedRecorder) -> None:
        self.store, self.pairing, self.writer = store, pairing, writer
        self._published: dict[str, tuple] = {}
        # Sessions adopted for a viewer before their agent came back, by the hash of the
        # resume secret the agent will present (only the hash is stored anywhere).
        self._waiting_secret: dict[str, Session] = {}

    def publish(self, now: float) -> None:
        """Queue the directory writes of what changed since the last call."""
        unknown_secret = {s.id for s in self._waiting_secret.values()}
        for session in self.pairing.sessions.values():
            if session.state != ACTIVE or session.id in unknown_secret:
                continue  # a waiting session cannot be resumed elsewhere: nothing to publish
            entry = entry_of(session, self.store.relay, now)
            key = (entry.state, entry.accepted_at, entry.resume_sha256, entry.control,
                   entry.screens, entry.code, entry.paused_s, entry.paused_at, entry.ref,
                   entry.note)
            if self._published.get(session.id) != key:
                self._published[session.id] = key
                self.writer.call(self.store.put, entry)
        for session_id in set(self._published) - set(self.pairing.sessions):
            del self._published[session_id]
            self.writer.call(self.store.remove, session_id)
        for secret_hash, session in list(self._waiting_secret.items()):
            if session.id not in self.pairing.sessions:
                del self._waiting_secret[secret_hash]

    async def adopt_for_agent(self, hello: protocol.AgentHello, now: float) -> None:
        """Before the rules see a resume hello whose secret they do not know."""
        if not hello.resume or hello.resume in self.pairing._by_resume:
            return
        waiting = self._waiting_secret.pop(resume_hash(hello.resume), None)
        if waiting is not None and waiting.id in self.pairing.sessions:
            # Adopted for the viewer first: the agent's secret is the one stored.
            self.pairing._by_resume.pop(waiting.resume, None)
            waiting.resume = hello.resume
            self.pairing._by_resume[hello.resume] = waiting
            return
        entry = await self.store.by_resume(hello.resume)
        if entry is not None and entry.technician == hello.technician:
            await self._adopt(entry, hello.resume, now)

    async def adopt_for_viewer(self, technician: str, session_id: str, now: float) -> None:
        """Before the rules see a viewer's accept of a session they do not hold."""
        if not isinstance(session_id, str) or session_id in self.pairing.sessions:
            return
        entry = await self.store.get(session_id)
        if entry is not None and entry.technician == technician:
            session = await self._adopt(entry, None, now)
            if session is not None:
                self._waiting_secret[entry.resume_sha256] = session

    async def _adopt(self, entry: Entry, secret: str | None, now: float) -> Session | None:
        if entry.state != ACTIVE or entry.accepted_at is None or entry.relay == self.store.relay:
            return None  # never accepted: nothing to resume; ours: the rules know it
        technician = await self.store.technician(entry.technician)
        if technician is None or not technician.enabled or entry.session in self.pairing.sessions:
            return None
        claimed = await self.store.claim(entry.session, self.store.relay, now)
        if (claimed is None or claimed.relay != entry.relay
                or entry.session in self.pairing.sessions):
            return None  # another relay was faster
        screens = tuple(protocol.Screen(*s) for s in json.loads(claimed.screens))
        lost_at = min(now, claimed.heartbeat_at)  # its relay's last sign of life for it
        session = Session(
            claimed.session, claimed.technician, technician.name, claimed.machine, claimed.user,
            claimed.address, screens, claimed.requested_at,
            secret or self.pairing._fresh_secret(),  # a placeholder until the agent is back
            None, state=ACTIVE, accepted_at=claimed.accepted_at,
            agent_lost_at=lost_at, viewer_lost_at=lost_at)
        for name in ("code", "ref", "paused_s", "paused_at", "note"):  # issues 12 and 13
            if hasattr(session, name):
                setattr(session, name, getattr(claimed, name))
        self.pairing.sessions[session.id] = session
        self.pairing._by_resume[session.resume] = session
        self.writer.event(session.id, "relay-takeover",
                          f"from {claimed.relay} to {self.store.relay}", now)
        log.info("session %s... taken over from %s", session.id[:8], claimed.relay)
        return session

    def hand_over(self, now: float) -> None:
        """Stopping with a shared store: end the sessions nobody accepted yet (a waiting
        session cannot be resumed elsewhere: relay-shutdown, as before) and queue the
        directory's last word on the rest. The caller flushes, then closes every link with
        CLOSE_RESTART, so agents and viewers come back and resume them."""
        for session in list(self.pairing.sessions.values()):
            if session.state != ACTIVE or session.accepted_at is None:
                self.pairing._end(session, "relay", "relay-shutdown", now)
        self.publish(now)
        log.info("handing over %d session(s) through the directory", len(self._published))

    async def sweep(self, now: float) -> int:
        """End the dead relays' sessions nobody came back to; how many."""
        ended = 0
        for entry in await self.store.stale(now - self.pairing.grace - SWEEP_MARGIN_S):
            if entry.relay == self.store.relay and entry.session in self.pairing.sessions:
                continue
            if await self.store.end_orphan(entry, "relay-lost"):
                log.info("session %s... of %s ended: relay-lost", entry.session[:8],
                         entry.relay)
                ended += 1
        return ended
