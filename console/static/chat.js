/* The customer web chat (console/templates/chat.html).
 *
 * Talks to the Rasa server's web chat socket (channels/webchat.py) with the
 * socket.io client; the session token comes from the page. Every text from
 * the customer, the bot or an agent is inserted with textContent, never as
 * markup. On every (re)connect the log is rebuilt from /chat/history, keeping
 * messages shown meanwhile that the history does not hold yet.
 */
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) {
    return;
  }
  var log = document.getElementById("chat-log");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var sendButton = document.getElementById("chat-send");
  var statusLine = document.getElementById("chat-status");
  var statusText = document.getElementById("chat-status-text");
  var typing = document.getElementById("chat-typing");
  var alertLine = document.getElementById("chat-alert");
  var restart = document.getElementById("chat-restart");

  var LABELS = { customer: "You", bot: "Assistant", agent: "Support agent", system: "Notice" };
  var TYPING_TIMEOUT_MS = 20000;
  var ACK_TIMEOUT_MS = 60000;
  var PAYLOAD_KEY = "crm-chat-payloads";
  var MAX_PAYLOADS = 100;
  var MAX_UNSYNCED = 100;
  var maxChars = parseInt(root.dataset.maxChars, 10) || 4000;
  var typingTimer = null;
  var shownSinceSync = [];
  var syncing = null;
  var ended = false;

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusText.textContent = text;
  }

  function showAlert(text) {
    alertLine.textContent = text;
    alertLine.hidden = !text;
  }

  function endSession(text) {
    ended = true;
    setStatus("error", "Disconnected");
    showAlert(text);
    restart.hidden = false;
    sendButton.disabled = true;
  }

  /* Button payloads seen live, so buttons re-read from the history (which
   * keeps only titles) still send what the bot expects. */
  function loadPayloads() {
    try {
      return JSON.parse(window.sessionStorage.getItem(PAYLOAD_KEY) || "{}") || {};
    } catch (error) {
      return {};
    }
  }
  var payloads = loadPayloads();

  function rememberPayloads(buttons) {
    buttons.forEach(function (button) {
      if (button.payload) {
        payloads[button.title] = button.payload;
      }
    });
    var titles = Object.keys(payloads);
    while (titles.length > MAX_PAYLOADS) {
      delete payloads[titles.shift()];
    }
    try {
      window.sessionStorage.setItem(PAYLOAD_KEY, JSON.stringify(payloads));
    } catch (error) {
      /* storage full or disabled: buttons then send their title */
    }
  }

  function cleanButtons(raw) {
    if (!Array.isArray(raw)) {
      return [];
    }
    return raw.filter(function (b) {
      return b && typeof b.title === "string" && b.title.trim() !== "";
    });
  }

  function timeLabel(iso) {
    var date = iso ? new Date(iso) : new Date();
    if (isNaN(date.getTime())) {
      return null;
    }
    var element = document.createElement("time");
    element.className = "chat-time";
    element.dateTime = date.toISOString();
    element.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return element;
  }

  function scrollToEnd() {
    log.scrollTop = log.scrollHeight;
    var last = log.lastElementChild;
    if (last && last.scrollIntoView) {
      last.scrollIntoView({ block: "end" });
    }
  }

  function disableChoices() {
    log.querySelectorAll(".chat-choices button").forEach(function (button) {
      button.disabled = true;
    });
  }

  /* A button's payload the customer sent comes back from the history as the
   * customer's text: show the button's title instead. */
  function shownText(message) {
    if (message.author !== "customer" || !message.text) {
      return message.text || "";
    }
    var titles = Object.keys(payloads);
    for (var i = 0; i < titles.length; i += 1) {
      if (payloads[titles[i]] === message.text) {
        return titles[i];
      }
    }
    return message.text;
  }

  function renderMessage(message, options) {
    var author = LABELS[message.author] ? message.author : "bot";
    var item = document.createElement("li");
    item.className = "chat-msg chat-msg-" + author;
    var meta = document.createElement("p");
    meta.className = "chat-meta";
    var who = document.createElement("span");
    who.className = "chat-who";
    who.textContent = LABELS[author];
    meta.appendChild(who);
    var time = timeLabel(message.at);
    if (time) {
      meta.appendChild(document.createTextNode(" "));
      meta.appendChild(time);
    }
    item.appendChild(meta);
    var text = document.createElement("p");
    text.className = "chat-text";
    text.textContent = shownText(message);
    item.appendChild(text);
    var buttons = cleanButtons(message.buttons);
    if (buttons.length && options.choices) {
      var group = document.createElement("div");
      group.className = "chat-choices";
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Suggested replies");
      buttons.forEach(function (button) {
        var element = document.createElement("button");
        element.type = "button";
        element.className = "chat-choice";
        element.textContent = button.title;
        element.addEventListener("click", function () {
          var payload = button.payload || payloads[button.title] || button.title;
          if (send(payload, button.title)) {
            input.focus();
          }
        });
        group.appendChild(element);
      });
      item.appendChild(group);
    }
    log.appendChild(item);
    scrollToEnd();
    return item;
  }

  function show(message) {
    var buttons = cleanButtons(message.buttons);
    if (buttons.length) {
      rememberPayloads(buttons);
    }
    shownSinceSync.push(message);
    if (shownSinceSync.length > MAX_UNSYNCED) {
      shownSinceSync.shift();
    }
    return renderMessage(message, { choices: true });
  }

  function setTyping(on) {
    window.clearTimeout(typingTimer);
    typing.hidden = !on;
    if (on) {
      typingTimer = window.setTimeout(function () {
        typing.hidden = true;
      }, TYPING_TIMEOUT_MS);
    }
  }

  /* Rebuild the log: the history, then what was shown since the last sync
   * and is not in the history yet (the contact history is written a moment
   * after the message, and live messages may arrive during the fetch). */
  function render(history, extra) {
    log.textContent = "";
    history.forEach(function (message, index) {
      var last = index === history.length - 1;
      renderMessage(message, { choices: last && message.author !== "customer" });
    });
    extra.forEach(function (message) {
      renderMessage(message, { choices: true });
    });
  }

  function missingFrom(history, shown) {
    var tail = history.slice(-50).map(function (m) {
      return { author: m.author, text: shownText(m), ref: m.ref, used: false };
    });
    return shown.filter(function (message) {
      var match = tail.find(function (h) {
        if (h.used) {
          return false;
        }
        if (message.ref && h.ref) {
          return message.ref === h.ref;
        }
        return h.author === message.author && h.text === message.text;
      });
      if (match) {
        match.used = true;
        return false;
      }
      return true;
    });
  }

  function resync() {
    if (syncing) {
      return syncing;
    }
    syncing = window
      .fetch(root.dataset.historyUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          endSession("Your chat session has expired. Start a new chat to continue.");
          return null;
        }
        if (!response.ok) {
          throw new Error("history " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        if (!data || !Array.isArray(data.messages)) {
          return;
        }
        var extra = missingFrom(data.messages, shownSinceSync);
        render(data.messages, extra);
        /* what the history does not hold yet is compared again next time */
        shownSinceSync = extra.slice(-MAX_UNSYNCED);
      })
      .catch(function () {
        /* keep the current log; the next reconnect tries again */
      })
      .then(function () {
        syncing = null;
      });
    return syncing;
  }

  function socketUrl() {
    if (root.dataset.socketUrl) {
      return root.dataset.socketUrl;
    }
    return window.location.protocol + "//" + window.location.hostname + ":" + root.dataset.socketPort;
  }

  if (typeof window.io !== "function") {
    setStatus("error", "Chat unavailable");
    showAlert("The chat could not start. Please reload the page.");
    return;
  }

  var socket = window.io(socketUrl(), {
    path: "/socket.io/",
    auth: { token: root.dataset.token },
    reconnectionDelayMax: 10000,
  });

  function updateSend() {
    sendButton.disabled = ended || !socket.connected || input.value.trim() === "";
  }

  function send(text, shown) {
    if (ended || !text || !text.trim()) {
      return false;
    }
    if (!socket.connected) {
      showAlert("You're offline. Your message was not sent; we'll reconnect shortly.");
      return false;
    }
    showAlert("");
    disableChoices();
    var item = show({ author: "customer", text: shown || text });
    item.classList.add("chat-pending");
    socket.timeout(ACK_TIMEOUT_MS).emit("user_uttered", { message: text }, function (error, ack) {
      item.classList.remove("chat-pending");
      if (error) {
        item.classList.add("chat-unconfirmed");
        return;
      }
      if (ack && ack.error) {
        item.classList.add("chat-failed");
        var note = document.createElement("p");
        note.className = "chat-note";
        note.textContent = "Not sent: " + ack.error;
        item.appendChild(note);
        shownSinceSync = shownSinceSync.filter(function (m) {
          return m.text !== (shown || text) || m.author !== "customer";
        });
      }
    });
    return true;
  }

  socket.on("connect", function () {
    setStatus("ok", "Connected");
    showAlert("");
    updateSend();
    resync();
  });

  socket.on("disconnect", function (reason) {
    setTyping(false);
    updateSend();
    if (reason === "io server disconnect") {
      endSession("The chat session has ended. Start a new chat to continue.");
    } else if (!ended) {
      setStatus("wait", "Connection lost, reconnecting…");
    }
  });

  socket.on("connect_error", function (error) {
    if (error && error.message === "unauthorized") {
      endSession("Your chat session has expired. Start a new chat to continue.");
      return;
    }
    setStatus("wait", "Can't reach the chat service, retrying…");
  });

  socket.io.on("reconnect_attempt", function () {
    if (!ended) {
      setStatus("wait", "Reconnecting…");
    }
  });

  socket.on("bot_uttered", function (message) {
    if (!message || typeof message.text !== "string" || message.text === "") {
      return;
    }
    if (message.author !== "agent") {
      setTyping(false);
    }
    show(message);
  });

  socket.on("customer_uttered", function (message) {
    if (message && typeof message.text === "string") {
      disableChoices();
      show({ author: "customer", text: message.text });
    }
  });

  socket.on("bot_typing", function (data) {
    setTyping(Boolean(data && data.typing));
  });

  socket.on("chat_error", function (data) {
    if (data && data.error === "unauthorized") {
      endSession("Your chat session has expired. Start a new chat to continue.");
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.slice(0, maxChars);
    if (send(text)) {
      input.value = "";
      autosize();
      updateSend();
    }
    input.focus();
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (typeof form.requestSubmit === "function") {
        form.requestSubmit();
      } else {
        form.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    }
  });

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 160) + "px";
  }

  input.addEventListener("input", function () {
    autosize();
    updateSend();
  });

  restart.addEventListener("click", function () {
    window.location.reload();
  });

  resync();
})();
