// The console's only way to the Manager: the public REST API under /api/v1,
// authenticated by the session cookie, with the session's CSRF token on
// every request that changes something.

let csrf = null;
let onSignedOut = () => {};

export function setSession(session) {
  csrf = session ? session.csrf_token : null;
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || 'http';
    this.details = body?.details || [];
  }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    if (response.status === 401 && path !== '/auth/session') onSignedOut();
    throw new ApiError(response.status, data);
  }
  return data;
}

// Sends a file as the request's body (an image upload), with the CSRF token.
export async function upload(path, file) {
  const response = await fetch(`/api/v1${path}`, {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/octet-stream', 'X-CSRF-Token': csrf || '' },
    body: file,
    credentials: 'same-origin',
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});
export const del = (path) => api('DELETE', path);

// A job's progress as server-sent events until it ends.
export function followJob(id, onProgress) {
  const source = new EventSource(`/api/v1/jobs/${id}/events`);
  source.addEventListener('progress', (event) => {
    const job = JSON.parse(event.data);
    onProgress(job);
    if (!['running', 'rolling_back'].includes(job.state)) source.close();
  });
  source.onerror = () => source.close();
  return () => source.close();
}
