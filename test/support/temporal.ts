// A real Temporal dev server for tests (the official CLI installed by scripts/setup.sh), plus
// client and worker connections to it. A missing binary fails the test with the install hint.
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { startDevServer } from '../../workflows/dev-server.ts';
import { installTemporalLogging } from '../../workflows/runtime.ts';

export interface TestTemporal {
  address: string;
  namespace: string;
  client: Client;
  connection: Connection;
  native: NativeConnection;
  stop(): Promise<void>;
}

export async function startTemporal(): Promise<TestTemporal> {
  installTemporalLogging();
  const server = await startDevServer({});
  try {
    const connection = await Connection.connect({ address: server.address });
    const native = await NativeConnection.connect({ address: server.address });
    const client = new Client({ connection, namespace: server.namespace });
    return {
      address: server.address,
      namespace: server.namespace,
      client,
      connection,
      native,
      async stop() {
        await connection.close().catch(() => undefined);
        await native.close().catch(() => undefined);
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}
