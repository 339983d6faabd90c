"""The self-service portal: users sign in with their directory password (and their second
factor) in a browser, and enroll an authenticator app by scanning a QR code.

Layout, one job per module:

- :mod:`~radmfa.portal.web`: HTTP as plain values, the security headers, the client's
  address behind trusted proxies, strict form decoding;
- :mod:`~radmfa.portal.sessions`: sessions in the store, changed field by field;
- :mod:`~radmfa.portal.account` and :mod:`~radmfa.portal.desk`: the only places the portal
  reads or changes the store, the user's own account and the help desk's view of others,
  through the admin use cases (besides the sign-in, which is :mod:`radmfa.auth.signin`,
  the pipeline's own checks);
- :mod:`~radmfa.portal.handlers`: dispatch, sign-in, enrolment, the help-desk 403;
- :mod:`~radmfa.portal.selfservice`, :mod:`~radmfa.portal.helpdesk`: the user's own pages
  and the help-desk pages;
- :mod:`~radmfa.portal.stepup`: "confirm it is you", a second factor proven again before a
  security change once ``portal.reauth_after`` has passed;
- :mod:`~radmfa.portal.pages`: Jinja2 templates (autoescaped) and the QR code;
- :mod:`~radmfa.portal.server`: twisted.web on the daemon's reactor, TCP or TLS;
- :mod:`~radmfa.portal.service`: its life cycle inside the daemon.

**Every worker, every node.** Sessions live in the store (:class:`~radmfa.portal.sessions.
SessionManager` over the store's portal calls), so with ``radius.workers > 1`` every worker
binds the portal's port with SO_REUSEPORT, and every node on one PostgreSQL store serves
any browser. The rules two requests at once must not get around are the store's, in one
transaction each: a pending enrolment or a sent code is taken once, a sign-in step rotates
the session once, "add only while the user has none" and "remove only if another remains"
are judged where the change is made (:meth:`~radmfa.store.base.Store.change_tokens`), and
an enrolment link is spent with the factor it adds (:mod:`radmfa.admin.links`).
"""
