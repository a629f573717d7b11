// Passkeys (issue #25): the browser's WebAuthn API, called from the app's Rust with strings in
// and out. Every failure rejects with a sentence for the user (a string), never an exception
// object. Same-origin script (served from /pkg/snippets/), so the page's CSP is unchanged.

function b64urlToBytes(s) {
  const base64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(base64 + "===".slice((base64.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function bytesToB64url(buffer) {
  let bin = "";
  for (const b of new Uint8Array(buffer)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Older browsers lack parse*OptionsFromJSON and toJSON(): the few binary fields by hand.
function creationOptions(o) {
  if (PublicKeyCredential.parseCreationOptionsFromJSON) {
    return PublicKeyCredential.parseCreationOptionsFromJSON(o);
  }
  return Object.assign({}, o, {
    challenge: b64urlToBytes(o.challenge),
    user: Object.assign({}, o.user, { id: b64urlToBytes(o.user.id) }),
    excludeCredentials: (o.excludeCredentials || []).map((c) =>
      Object.assign({}, c, { id: b64urlToBytes(c.id) })),
  });
}

function requestOptions(o) {
  if (PublicKeyCredential.parseRequestOptionsFromJSON) {
    return PublicKeyCredential.parseRequestOptionsFromJSON(o);
  }
  return Object.assign({}, o, {
    challenge: b64urlToBytes(o.challenge),
    allowCredentials: (o.allowCredentials || []).map((c) =>
      Object.assign({}, c, { id: b64urlToBytes(c.id) })),
  });
}

function credentialJSON(c) {
  if (typeof c.toJSON === "function") return c.toJSON();
  const r = c.response;
  const response = { clientDataJSON: bytesToB64url(r.clientDataJSON) };
  for (const k of ["attestationObject", "authenticatorData", "signature", "userHandle"]) {
    if (r[k]) response[k] = bytesToB64url(r[k]);
  }
  return {
    id: c.id,
    rawId: bytesToB64url(c.rawId),
    type: c.type,
    response,
    clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
  };
}

function sentence(e) {
  if (typeof e === "string") return e;
  if (e && e.name === "NotAllowedError") return "The passkey was not used (cancelled, or it took too long).";
  if (e && e.name === "InvalidStateError") return "This passkey is already registered.";
  return "The passkey could not be used" + (e && e.message ? ": " + e.message : ".");
}

function usable() {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    throw "This browser cannot use passkeys.";
  }
}

// `passkey_options`' ack (its JSON text) to `{"credential":…}` for `passkey_add`.
export async function passkeyCreate(ackText) {
  try {
    usable();
    const ack = JSON.parse(ackText);
    if (ack.error) throw ack.error.message;
    const created = await navigator.credentials.create({ publicKey: creationOptions(ack.ok.publicKey) });
    return JSON.stringify({ credential: credentialJSON(created) });
  } catch (e) {
    throw sentence(e);
  }
}

// An ack's error message, or "" when it is `{ok}`.
export function ackError(ackText) {
  try {
    const ack = JSON.parse(ackText);
    return ack.error ? String(ack.error.message) : "";
  } catch (e) {
    return "The server's answer could not be read.";
  }
}

const SIGN_IN_ERRORS = {
  unknown_name: "No passkey protects that name.",
  passkey_refused: "That passkey was refused.",
  ceremony_expired: "That took too long. Try again.",
  too_many_sessions: "This account has too many sessions. Sign out on a device you no longer use and try again.",
  rate_limited: "Too many tries. Wait a moment and try again.",
  passkeys_unavailable: "Passkeys are not available on this server.",
  proof_required: "This browser could not prove it holds its key. Try again.",
};

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    cache: "no-store",
  });
  const answer = await r.json().catch(() => null);
  if (!r.ok) {
    const code = answer && answer.error && answer.error.code;
    throw SIGN_IN_ERRORS[code] || (answer && answer.error && answer.error.message) || "The server could not be reached.";
  }
  return answer;
}

// Signs in as `username` with a passkey: the `{sessionID, userID, username}` JSON text.
export async function passkeySignIn(username) {
  try {
    usable();
    // The new session is bound to this browser's key from birth (a session without one could
    // never add or remove a passkey).
    const popKey = await publicKey();
    if (!popKey) throw "This browser cannot keep a key (its storage is off), so it cannot sign in with a passkey.";
    const started = await post("/api/passkey/options", { username });
    const asserted = await navigator.credentials.get({ publicKey: requestOptions(started.publicKey) });
    const pop = await prove("signin:" + started.ceremony);
    if (!pop) throw "This browser could not use its key. Try again.";
    const done = await post("/api/passkey/signin", { ceremony: started.ceremony, credential: credentialJSON(asserted), popKey, pop });
    return JSON.stringify(done);
  } catch (e) {
    throw sentence(e);
  }
}

// Proof of possession (issue #25): one ECDSA P-256 key per browser profile and origin, made
// non-extractable (its private half can be used here, never copied out) and kept in IndexedDB
// (database "tether", store "keys", record "pop": {privateKey, publicRaw}). Used by the tab and
// by the SharedWorker alike. Nothing here rejects: without IndexedDB or WebCrypto the answer is
// null, and the session simply stays unbound.
const POP_DB = "tether";
const POP_STORE = "keys";
const POP_RECORD = "pop";

function idbRequest(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openKeys() {
  const r = indexedDB.open(POP_DB, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(POP_STORE);
  return idbRequest(r);
}

function readKey(db) {
  return idbRequest(db.transaction(POP_STORE, "readonly").objectStore(POP_STORE).get(POP_RECORD));
}

async function loadOrMakeKey() {
  const db = await openKeys();
  try {
    const held = await readKey(db);
    if (held) return held;
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const made = { privateKey: pair.privateKey, publicRaw: await crypto.subtle.exportKey("raw", pair.publicKey) };
    try {
      // add(), not put(): a tab and the worker may race to make the key, and the loser's add
      // fails (ConstraintError) instead of replacing the key a session is already bound to.
      await idbRequest(db.transaction(POP_STORE, "readwrite").objectStore(POP_STORE).add(made, POP_RECORD));
      return made;
    } catch (e) {
      const winner = await readKey(db);
      if (winner) return winner;
      throw e;
    }
  } finally {
    db.close();
  }
}

let popKey = null;
function theKey() {
  if (!popKey) popKey = loadOrMakeKey().catch((e) => { popKey = null; throw e; });
  return popKey;
}

// The public key, base64url of its 65-byte uncompressed point, or null.
export async function publicKey() {
  try {
    return bytesToB64url((await theKey()).publicRaw);
  } catch (e) {
    return null;
  }
}

// The proof for the connection whose Engine.IO sid is `sid`: base64url of the 64-byte r‖s
// signature over "tether-pop-1:" + sid, or null.
export async function prove(sid) {
  try {
    const key = await theKey();
    const signed = await crypto.subtle.sign(
      { name: "ECDSA", hash: "SHA-256" },
      key.privateKey,
      new TextEncoder().encode("tether-pop-1:" + sid),
    );
    return bytesToB64url(signed);
  } catch (e) {
    return null;
  }
}
