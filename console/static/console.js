/* Agent console: live updates over server-sent events and small conveniences.
 *
 * Everything works without this script (forms post and redirect back). With it:
 * - the queue list is replaced whenever the server pushes a new one
 *   (EventSource on #queue[data-events]; the fragment is server-rendered and
 *   autoescaped);
 * - an open conversation gets new messages appended as they happen (text set
 *   with textContent, never parsed as HTML), and a banner when the handoff's
 *   state changes elsewhere;
 * - replies are sent without a page reload (the message then arrives over
 *   the event stream), canned replies fill the reply box, wait times tick.
 */
(function () {
  "use strict";

  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) { return seconds + " s"; }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) { return minutes + " min"; }
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) { return minutes ? hours + " h " + minutes + " min" : hours + " h"; }
    return Math.floor(hours / 24) + " d";
  }

  function stamp(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return ""; }
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function tickTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("[data-since]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(t)) { el.textContent = duration((now - t) / 1000); }
    });
  }

  function setLive(name, state) {
    document.querySelectorAll('[data-live-for="' + name + '"]').forEach(function (el) {
      el.textContent = state === "open" ? "live" : "reconnecting…";
      el.classList.toggle("live-off", state !== "open");
    });
  }

  function watch(url, name, handlers) {
    if (!window.EventSource) { return null; }
    var source = new EventSource(url);
    source.onopen = function () { setLive(name, "open"); };
    source.onerror = function () { setLive(name, "closed"); };
    Object.keys(handlers).forEach(function (event) {
      source.addEventListener(event, handlers[event]);
    });
    window.addEventListener("pagehide", function () { source.close(); });
    return source;
  }

  /* Queue page */
  function initQueue() {
    var box = document.getElementById("queue");
    if (!box || !box.dataset.events) { return; }
    watch(box.dataset.events, "queue", {
      queue: function (event) {
        box.innerHTML = event.data; /* server-rendered, autoescaped fragment */
        tickTimes(box);
      }
    });
  }

  /* Conversation page */
  function messageItem(m) {
    var li = document.createElement("li");
    li.className = "msg msg-" + String(m.author).replace(/[^a-z_]/g, "");
    li.dataset.id = String(m.id);
    var meta = document.createElement("div");
    meta.className = "msg-meta";
    var author = document.createElement("span");
    author.className = "msg-author";
    author.textContent = m.author;
    meta.appendChild(author);
    if (m.staff) {
      var staff = document.createElement("span");
      staff.className = "msg-staff";
      staff.textContent = m.staff;
      meta.appendChild(staff);
    }
    if (m.purpose && m.purpose !== "agent_reply") {
      var tag = document.createElement("span");
      tag.className = "msg-tag";
      tag.textContent = String(m.purpose).replace(/_/g, " ");
      meta.appendChild(tag);
    }
    if (m.intent) {
      var intent = document.createElement("span");
      intent.className = "msg-tag";
      intent.textContent = m.intent;
      meta.appendChild(intent);
    }
    var time = document.createElement("time");
    time.dateTime = m.occurred_at;
    time.textContent = stamp(m.occurred_at);
    meta.appendChild(time);
    var text = document.createElement("p");
    text.className = "msg-text";
    text.textContent = m.text == null ? "" : m.text;
    li.appendChild(meta);
    li.appendChild(text);
    return li;
  }

  function initTranscript() {
    var list = document.getElementById("transcript");
    if (!list || !list.dataset.events) { return; }
    var banner = document.getElementById("state-banner");
    var pageStatus = list.dataset.status;
    var pageClaimer = list.dataset.claimedBy;
    var nearBottom = function () {
      return window.innerHeight + window.scrollY >= document.body.offsetHeight - 200;
    };
    watch(list.dataset.events, "transcript", {
      message: function (event) {
        var m;
        try { m = JSON.parse(event.data); } catch (e) { return; }
        if (list.querySelector('[data-id="' + Number(m.id) + '"]')) { return; }
        var stick = nearBottom();
        list.appendChild(messageItem(m));
        var empty = document.getElementById("transcript-empty");
        if (empty) { empty.remove(); }
        if (stick) { list.lastElementChild.scrollIntoView({ block: "end" }); }
      },
      state: function (event) {
        var s;
        try { s = JSON.parse(event.data); } catch (e) { return; }
        var claimer = s.claimed_by == null ? "" : String(s.claimed_by);
        if (!banner || (s.status === pageStatus && claimer === pageClaimer)) { return; }
        banner.querySelector(".state-text").textContent =
          "This handoff is now " + String(s.status).replace(/_/g, " ") + ".";
        banner.hidden = false;
      }
    });
  }

  function initReply() {
    var form = document.getElementById("reply");
    if (!form || !window.fetch) { return; }
    var box = form.querySelector("textarea");
    var status = document.getElementById("reply-status");
    form.querySelectorAll(".canned").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = button.dataset.text || "";
        box.value = box.value ? box.value.replace(/\s*$/, "") + "\n" + text : text;
        box.focus();
      });
    });
    box.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!box.value.trim()) { return; }
      var button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      status.textContent = "Sending…";
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
        body: new URLSearchParams(new FormData(form))
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (!response.ok) { throw new Error(body.error || "could not send (" + response.status + ")"); }
          box.value = "";
          status.textContent = "Sent.";
        });
      }).catch(function (error) {
        status.textContent = error.message;
      }).then(function () {
        button.disabled = false;
        box.focus();
      });
    });
  }

  function initConfirm() {
    document.querySelectorAll("[data-confirm]").forEach(function (el) {
      el.addEventListener("click", function (event) {
        if (!window.confirm(el.dataset.confirm)) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initQueue();
    initTranscript();
    initReply();
    initConfirm();
    tickTimes(document);
    window.setInterval(function () { tickTimes(document); }, 15000);
  });
}());
