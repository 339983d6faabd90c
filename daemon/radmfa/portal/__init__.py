"""The self-service portal: users sign in with their directory password (and their second
factor) in a browser, and enroll an authenticator app by scanning a QR code.

Layout, one job per module:

- :mod:`~radmfa.portal.web`: HTTP as plain values, the security headers, the client's
  address behind trusted proxies, strict form decoding;
- :mod:`~radmfa.portal.sessions`: sessions behind a small storage protocol (in memory now);
- :mod:`~radmfa.portal.account` and :mod:`~radmfa.portal.desk`: the only places the portal
  reads or changes the store, the user's own account and the help desk's view of others,
  through the admin use cases (besides the sign-in, which is :mod:`radmfa.auth.signin`,
  the pipeline's own checks);
- :mod:`~radmfa.portal.handlers`: dispatch, sign-in, enrolment, the help-desk 403;
- :mod:`~radmfa.portal.selfservice`, :mod:`~radmfa.portal.helpdesk`: the user's own pages
  and the help-desk pages;
- :mod:`~radmfa.portal.pages`: Jinja2 templates (autoescaped) and the QR code;
- :mod:`~radmfa.portal.server`: twisted.web on the daemon's reactor, TCP or TLS;
- :mod:`~radmfa.portal.service`: its life cycle inside the daemon.

**One process.** Sessions live in this process's memory (:class:`~radmfa.portal.sessions.
MemorySessionStore`), so with ``radius.workers > 1`` the portal is served by worker 0 only:
a browser's requests must all reach the process holding its session, and a second worker
bound to the same port with SO_REUSEPORT would get some of them. Changes of one user are
also serialised in that process (:class:`~radmfa.portal.account.UserLocks`). Once sessions
are kept in the store (a ``SessionStore`` behind the store runner), every worker, and every
node, can serve the portal (and those checks need a lock in the store).
"""
