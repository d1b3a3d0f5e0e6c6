export { freePort } from '../../gateway/net/free-port.ts';
