/** The version `vhdsync --version` prints (package.json's "version"; a test keeps them equal). */
export const VERSION = '0.1.0';
