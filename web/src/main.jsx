// The Neptune web console: a client of the public REST API only. Every
// resource has its own URL (History API); the Manager answers each of these
// URLs with this page (crates/neptune-manager/src/http/web.rs lists them).
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { navigate, usePath } from './router.js';
import { api, get, setSession, whenSignedOut } from './api.js';
import { Editor } from './editor.jsx';
import { ViList, ViWatch } from './vi.jsx';
import { Account, DatacenterPage, HostPage, Hosts, Queue, Preview, TemplatePage, Templates, UserPage, Users } from './admin.jsx';

function Login({ onSession }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    setBusy(true);
    setError('');
    try {
      const session = await api('POST', '/auth/session', { name: form.get('name'), password: form.get('password') });
      onSession(session);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} aria-label="Log in">
        <h1>Neptune</h1>
        <p class="muted">Virtual Infrastructures, designed, approved, placed and run.</p>
        <label>
          User <input name="name" autocomplete="username" required autofocus />
        </label>
        <label>
          Password <input name="password" type="password" autocomplete="current-password" required />
        </label>
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>Log in</button>
      </form>
    </main>
  );
}

function Nav({ user, path, onLogout }) {
  const admin = user.role === 'admin';
  const link = (href, text) => (
    <a href={href} aria-current={path === href || (href !== '/' && path.startsWith(`${href}/`)) ? 'page' : undefined}>
      {text}
    </a>
  );
  return (
    <header class="top">
      <a class="brand" href="/vis">Neptune</a>
      <nav aria-label="Main">
        {link('/vis', 'Virtual Infrastructures')}
        {link('/design', 'Design')}
        {link('/templates', 'Templates')}
        {admin && link('/admin/queue', 'Approval queue')}
        {admin && link('/admin/hosts', 'Hosts')}
        {admin && link('/admin/users', 'Users')}
      </nav>
      <span class="who">
        <a href="/account" aria-current={path === '/account' ? 'page' : undefined}>{user.name}</a> ({user.role})
        <button type="button" class="link" onClick={onLogout}>Log out</button>
      </span>
    </header>
  );
}

// A path's segment, decoded (names may carry characters a URL escapes).
const segment = (s) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

function Page({ path, user }) {
  let m;
  if (path === '/' || path === '/vis') return <ViList user={user} />;
  if ((m = /^\/vis\/([0-9a-f-]{36})$/.exec(path))) return <ViWatch id={m[1]} user={user} />;
  if (path === '/design') return <Editor key="new" />;
  if ((m = /^\/design\/([0-9a-f-]{36})$/.exec(path))) return <Editor key={m[1]} id={m[1]} />;
  if (path === '/templates' || path === '/admin/templates') return <Templates user={user} />;
  if ((m = /^\/templates\/([0-9a-f-]{36})$/.exec(path))) return <TemplatePage key={m[1]} id={m[1]} user={user} />;
  if (path === '/account') return <Account />;
  if (path === '/admin' || path.startsWith('/admin/')) {
    // Administrators only: anyone else is told so, and no admin API is called.
    if (user.role !== 'admin') {
      return (
        <main data-testid="refused">
          <h1>Administrators only</h1>
          <p role="alert">
            {path} is for administrators; you are signed in as {user.name}. <a href="/vis">Your Virtual Infrastructures</a>
          </p>
        </main>
      );
    }
    if (path === '/admin' || path === '/admin/queue') return <Queue />;
    if ((m = /^\/admin\/queue\/([0-9a-f-]{36})$/.exec(path))) return <Preview id={m[1]} />;
    if (path === '/admin/hosts' || path === '/admin/datacenters') return <Hosts />;
    if ((m = /^\/admin\/hosts\/([^/]+)$/.exec(path))) return <HostPage key={m[1]} name={segment(m[1])} />;
    if ((m = /^\/admin\/datacenters\/([^/]+)$/.exec(path))) return <DatacenterPage key={m[1]} name={segment(m[1])} />;
    if (path === '/admin/users') return <Users />;
    if ((m = /^\/admin\/users\/([^/]+)$/.exec(path))) return <UserPage key={m[1]} name={segment(m[1])} me={user} />;
  }
  return (
    <main>
      <h1>Not found</h1>
      <p>
        Nothing at {path}. <a href="/vis">Your Virtual Infrastructures</a>
      </p>
    </main>
  );
}

function App() {
  const [session, setState] = useState(undefined);
  const path = usePath();
  const use = (s) => {
    setSession(s);
    setState(s);
  };
  useEffect(() => {
    whenSignedOut(() => use(null));
    get('/auth/session').then(use, () => use(null));
  }, []);
  useEffect(() => {
    if (session && path === '/login') navigate('/vis');
  }, [session, path]);
  if (session === undefined) return <p class="loading">Loading…</p>;
  if (!session) return <Login onSession={use} />;
  const logout = async () => {
    await api('DELETE', '/auth/session').catch(() => {});
    use(null);
    navigate('/login');
  };
  return (
    <>
      <a class="skip" href="#content">Skip to content</a>
      <Nav user={session.user} path={path} onLogout={logout} />
      <div id="content">
        <Page path={path} user={session.user} />
      </div>
    </>
  );
}

render(<App />, document.getElementById('app'));
